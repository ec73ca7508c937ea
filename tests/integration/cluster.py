"""llmux as production runs it: daphne and `llmux worker` as separate processes.

Each runs in a process group of its own so that kill -9 takes the whole tree (qcluster's
main, sentinel, pusher, monitor and workers). Used by the chaos tests and the checkpoint
tests that need a real worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from llmux_site.serve import ASGI_APP, WEB_SERVER, daphne_endpoint
from tests.integration.harness import REPO, Llmux
from tests.integration.invariants import simulator_processes, wait_until
from tests.plugins.data_dir import TEST_PATH_ROOTS
from tests.plugins.engines import free_port


@dataclass
class Cluster:
    """llmux as separate processes: a daphne and a worker, each in its own process group."""

    data_dir: Path
    port: int
    config: dict[str, Any]
    web: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def llmux(self) -> Llmux:
        """The integration harness's view of the same data directory and port."""
        return Llmux(data_dir=self.data_dir, port=self.port)

    @property
    def database(self) -> Path:
        return self.data_dir / "llmux.sqlite3"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
        return env | {
            "LLMUX_DATA_DIR": str(self.data_dir),
            "LLMUX_PATH_ROOTS": TEST_PATH_ROOTS,
            "DJANGO_SETTINGS_MODULE": "llmux_site.settings",
            "PYTHONUNBUFFERED": "1",
        }

    def prepare(self) -> None:
        """Migrate and import the registry once, as an operator does before starting."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.data_dir / "llmux.json"
        config_file.write_text(json.dumps(self.config))
        for argv in (["migrate", "--verbosity", "0"], ["llmux_import", str(config_file)]):
            subprocess.run(
                [sys.executable, "manage.py", *argv],
                cwd=REPO,
                env=self.env(),
                check=True,
                capture_output=True,
                timeout=120,
            )

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.data_dir / f"{name}.log").open("ab")
        with log:
            process = subprocess.Popen(
                argv,
                cwd=REPO,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill -9 takes the tree
            )
        self.started.append(process)
        return process

    def start_web(self) -> None:
        endpoint = daphne_endpoint("127.0.0.1", self.port)
        self.web = self._spawn("web", [sys.executable, "-m", WEB_SERVER, "-e", endpoint, ASGI_APP])
        wait_until(self._answers_models, timeout=60, what="daphne to serve /v1/models")

    def _answers_models(self) -> bool:
        assert self.web is not None and self.web.poll() is None, self.log("web")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
            return bool(self.llmux.client(timeout=5).models.list().data)
        return False

    def start_worker(self) -> None:
        before = self.log("worker").count("] running.")
        self.worker = self._spawn("worker", [sys.executable, "-m", "django", "llmux", "worker"])
        wait_until(
            lambda: self.log("worker").count("] running.") > before,
            timeout=60,
            what="the worker's cluster to run",
        )

    def kill_9(self, process: subprocess.Popen[bytes] | None) -> None:
        """SIGKILL a process's whole group (no cleanup of any kind) and reap it."""
        assert process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def log(self, name: str) -> str:
        path = self.data_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def model_path(self, model: str) -> str:
        return str(self.config["models"][model]["model_path"])

    def switch_requests(self, model: str) -> list[tuple[str, str]]:
        return self.llmux.query(
            "SELECT s.status, s.error FROM models_app_switchrequest s "
            "JOIN models_app_modeldefinition m ON m.id = s.target_id "
            "WHERE m.name = ? ORDER BY s.id",
            model,
        )

    def open_switches(self) -> list[tuple[Any, ...]]:
        return self.llmux.query(
            "SELECT id, status FROM models_app_switchrequest WHERE status IN ('pending', 'running')"
        )

    def shut_down(self) -> None:
        """Stop worker and web, then every engine; reap everything we started."""
        if self.worker is not None and self.worker.poll() is None:
            self.llmux.manage("from models_app.services.sweeper import stop_sweep; stop_sweep()")
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill_9(self.worker)
        for process in self.started:
            if process.poll() is None:
                self.kill_9(process)
        self.llmux.manage(
            "from models_app.services.runtime import stop_all_engines; stop_all_engines()"
        )


MakeCluster = Callable[[dict[str, Any]], Cluster]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[MakeCluster]:
    """Builds the cluster; whatever a test leaves running is stopped and reaped."""
    made: list[Cluster] = []

    def make(config: dict[str, Any]) -> Cluster:
        built = Cluster(data_dir=tmp_path / "llmux", port=free_port(), config=config)
        made.append(built)
        built.prepare()
        built.start_web()
        built.start_worker()
        return built

    yield make
    for built in made:
        built.shut_down()
        for name in built.config["models"]:
            assert simulator_processes(built.model_path(name)) == [], f"{name} outlived llmux"


def ask(server: Llmux, model: str, timeout: float = 60.0) -> str:
    answer = server.client(timeout=timeout).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "after the crash"}], max_tokens=4
    )
    content = answer.choices[0].message.content
    assert content
    return content


def wait_for_state(server: Llmux, model: str, state: str, timeout: float = 30) -> None:
    wait_until(
        lambda: server.states().get(model) == state,
        timeout=timeout,
        what=lambda: f"{model} to be {state} (states {server.states()})",
        interval=0.02,
    )


def gone(process: psutil.Process) -> bool:
    """Exited (a zombie whose parent died waits for init to reap it: gone too)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
