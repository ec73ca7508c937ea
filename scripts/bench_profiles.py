"""The deployment profiles benchmarks run `llmux serve` in, as docs/DEPLOYMENT.md sets them.

- embedded: SQLite in the data directory, no Redis (what `make run` does);
- production: a fresh PostgreSQL database (127.0.0.1:5432, trust auth, as
  scripts/ci-services.sh starts it) and Redis (127.0.0.1:6379) for the bus and channels,
  with LLMUX_TLS off: the benchmark speaks plain HTTP on loopback, where a deployment's
  TLS-terminating proxy would (with LLMUX_TLS on, pages redirect plain HTTP to HTTPS).
- sqlite-redis: the production profile with SQLite in the data directory instead of
  PostgreSQL, for a machine that has Redis but no PostgreSQL (the GPU machine).

`profile_env` adds the profile's variables to an environment, migrates a fresh database
with the given tree's code, and drops the database afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG = "postgres://postgres@127.0.0.1:5432"
PROFILES = ("embedded", "production", "sqlite-redis")
REDIS_ENV = {
    "LLMUX_REDIS_URL": "redis://127.0.0.1:6379/3",
    "LLMUX_SECRET_KEY": "bench-" + "x" * 40,
    "LLMUX_TLS": "false",
}


def _psql(sql: str) -> None:
    argv = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", sql]
    subprocess.run(argv, check=True, capture_output=True)


def base_env() -> dict[str, str]:
    """This environment without llmux's settings, so a benchmark sets its own, but with
    `--web-processes` (LLMUX_WEB_PROCESSES) when given; else llmux serve picks (auto)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    if "LLMUX_WEB_PROCESSES" in os.environ:
        env["LLMUX_WEB_PROCESSES"] = os.environ["LLMUX_WEB_PROCESSES"]
    return env


def web_processes() -> str:
    """What the benchmark runs llmux serve with, for its report."""
    return os.environ.get("LLMUX_WEB_PROCESSES", "auto")


@contextmanager
def profile_env(profile: str, tree: Path, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`env` with `profile`'s settings; a production database exists while this is open."""
    if profile == "embedded":
        yield env
        return
    if profile == "sqlite-redis":
        env = env | REDIS_ENV
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], cwd=tree, env=env, check=True
        )
        yield env
        return
    if profile not in ("production", "redis"):  # "redis": bench_switch's older name
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    database = f"llmux_bench_{uuid.uuid4().hex[:8]}"
    _psql(f"CREATE DATABASE {database}")
    try:
        env = env | REDIS_ENV | {"LLMUX_DATABASE_URL": f"{PG}/{database}"}
        migrate = [sys.executable, "manage.py", "migrate", "-v0"]
        subprocess.run(migrate, cwd=tree, env=env, check=True)
        yield env
    finally:
        _psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
