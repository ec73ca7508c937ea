"""Run a whole llmux (`manage.py llmux serve`: daphne + qcluster) against simulator engines."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from tests.plugins.data_dir import TEST_PATH_ROOTS
from tests.plugins.engines import free_port

REPO = Path(__file__).resolve().parent.parent.parent


def sim_model(port: int, **extra: Any) -> dict[str, Any]:
    """An llmux model entry for a small, fast simulated engine."""
    args = ["--sim-weights-bytes", "1MiB", "--sim-startup-seconds", "0"]
    args += extra.pop("extra_args", [])
    return {"model_path": f"sim/model-{port}", "port": port, "extra_args": args} | extra


@dataclass
class Llmux:
    data_dir: Path
    port: int
    process: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key="unused", max_retries=0, **kwargs)

    def async_client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key="unused", max_retries=0, **kwargs)

    def start(self, config: dict[str, Any], env: dict[str, str] | None = None) -> None:
        config_file = self.data_dir / "llmux.json"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(config))
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
        full_env |= {
            "LLMUX_DATA_DIR": str(self.data_dir),
            "LLMUX_PATH_ROOTS": TEST_PATH_ROOTS,
            "PYTHONUNBUFFERED": "1",
        }
        full_env |= env or {}
        log = (self.data_dir / "serve.log").open("a")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "llmux",
                "serve",
                "--port",
                str(self.port),
                "--config",
                str(config_file),
            ],
            cwd=REPO,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = (self.data_dir / "serve.log").read_text()
            if "llmux is ready on" in text:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"llmux did not start:\n{self.log()}")

    def log(self) -> str:
        path = self.data_dir / "serve.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def manage(self, code: str, env: dict[str, str] | None = None) -> str:
        """Run Python in `manage.py shell` against this llmux's database (as an operator)."""
        return self.command(["shell", "--no-imports", "-c", code], env)

    def command(self, args: list[str], env: dict[str, str] | None = None) -> str:
        """`manage.py ARGS` against this llmux's data (with `env`'s settings too); its output."""
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
        full_env |= {"LLMUX_DATA_DIR": str(self.data_dir), "LLMUX_PATH_ROOTS": TEST_PATH_ROOTS}
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=full_env | (env or {}),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def wait_for_states(self, expected: dict[str, str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.states() != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"states {self.states()} never became {expected}")
            time.sleep(0.1)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.data_dir / "llmux.sqlite3", timeout=10) as db:
            return db.execute(sql, params).fetchall()

    def states(self) -> dict[str, str]:
        rows = self.query(
            "SELECT m.name, r.state FROM models_app_engineruntime r "
            "JOIN models_app_modeldefinition m ON m.id = r.model_id"
        )
        return dict(rows)

    def swaps(self, timeout: float = 10) -> list[tuple[Any, ...]]:
        """Swap rows, once none is in progress (a client is answered before the settle)."""
        deadline = time.monotonic() + timeout
        while self.query("SELECT 1 FROM models_app_swapevent WHERE outcome = 'in_progress'"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return self.query(
            "SELECT from_name, to_name, outcome, bringup, escalated, error "
            "FROM models_app_swapevent ORDER BY id"
        )


def new_llmux(tmp_path: Path) -> Llmux:
    return Llmux(data_dir=tmp_path / "llmux", port=free_port())
