"""Settings come only from LLMUX_* variables; a bad value stops start-up naming it."""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_manage(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    full_env |= env
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LLMUX_DEBUG", "maybe", "LLMUX_DEBUG: expected true or false"),
        ("LLMUX_WORKERS", "two", "LLMUX_WORKERS: expected a whole number"),
        ("LLMUX_WORKERS", "1", "LLMUX_WORKERS: must be at least 2"),
        ("LLMUX_LOG_LEVEL", "LOUD", "LLMUX_LOG_LEVEL: expected one of"),
        ("LLMUX_DATABASE_URL", "mysql://x/y", "LLMUX_DATABASE_URL: expected a URL starting with"),
        ("LLMUX_REDIS_URL", "redis://127.0.0.1:notaport/0", "LLMUX_REDIS_URL: URL has an invalid"),
        ("LLMUX_ALLOWED_HOSTS", "a,,b", "LLMUX_ALLOWED_HOSTS: empty item"),
        ("LLMUX_SECRET_KEY", "short", "LLMUX_SECRET_KEY: must be at least 32 characters"),
        ("LLMUX_CUDA_SUSPEND", "maybe", "LLMUX_CUDA_SUSPEND: expected one of auto, driver, off"),
        ("LLMUX_DENIED_PORTS", "22,ssh", "LLMUX_DENIED_PORTS: 'ssh' is not a port or range"),
        ("LLMUX_DENIED_PORTS", "0-80", "LLMUX_DENIED_PORTS: '0-80' is not within 1-65535"),
        ("LLMUX_TRUSTED_PROXIES", "10.0.0.0/8,nginx", "LLMUX_TRUSTED_PROXIES: 'nginx' is not"),
        ("LLMUX_HEADER_TIMEOUT_SECS", "0", "LLMUX_HEADER_TIMEOUT_SECS: must be at least 1"),
        ("LLMUX_BODY_TIMEOUT_SECS", "soon", "LLMUX_BODY_TIMEOUT_SECS: expected a whole number"),
    ],
)
def test_it_refuses_to_start_with_a_bad_value_naming_the_variable(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    result = run_manage(["check"], {"LLMUX_DATA_DIR": str(tmp_path), variable: value})
    assert result.returncode != 0
    assert expected in result.stderr


def test_production_profile_requires_a_secret_key(tmp_path: Path) -> None:
    result = run_manage(
        ["check"],
        {"LLMUX_DATA_DIR": str(tmp_path), "LLMUX_DATABASE_URL": "postgres://127.0.0.1/x"},
    )
    assert result.returncode != 0
    assert "LLMUX_SECRET_KEY: required" in result.stderr


def test_embedded_profile_keeps_all_state_under_the_data_dir_in_wal_mode(tmp_path: Path) -> None:
    data = tmp_path / "state"
    result = run_manage(["migrate", "-v0"], {"LLMUX_DATA_DIR": str(data)})
    assert result.returncode == 0, result.stderr
    assert {p.name for p in data.iterdir()} >= {
        "llmux.sqlite3",
        "logs",
        "run",
        "images",
        "gpu-ledger",
        "secret_key",
    }
    assert oct((data / "secret_key").stat().st_mode & 0o777) == "0o600"
    with sqlite3.connect(data / "llmux.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_secret_key_is_stable_across_starts(tmp_path: Path) -> None:
    env = {"LLMUX_DATA_DIR": str(tmp_path)}
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    first = run_manage(["shell", "--no-imports", "-c", code], env)
    second = run_manage(["shell", "--no-imports", "-c", code], env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert len(first.stdout.strip()) >= 50


def test_check_deploy_is_clean_under_production_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")} | {
        "LLMUX_DATA_DIR": str(tmp_path),
        "LLMUX_DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "LLMUX_REDIS_URL": "redis://127.0.0.1:6379/0",
        "LLMUX_SECRET_KEY": secrets.token_urlsafe(50),
        "LLMUX_ALLOWED_HOSTS": "llmux.example.com",
        "DJANGO_SETTINGS_MODULE": "llmux_site.settings",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout
