"""Chaos: kill -9 llmux's worker mid-switch and its web process mid-stream, then recover.

`llmux serve` stops everything when one of its children dies, so these tests run the pieces
as production does: `migrate` and `llmux_import` once, then daphne and `llmux worker` as
separate processes, each in a process group of its own so that kill -9 takes the whole
tree (qcluster's main, sentinel, pusher, monitor and workers). Engines live in sessions of
their own and survive both: after a restart every model must be in a consistent state, no
engine may run twice, and the next request must succeed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import openai
import psutil
import pytest

from llmux_site.serve import ASGI_APP, daphne_endpoint
from tests.integration.harness import REPO, Llmux, sim_model
from tests.integration.invariants import (
    one_process_per_model,
    simulator_processes,
    wait_until,
)
from tests.plugins.engines import free_port

DRAIN_TIMEOUT_SECS = 20


def chaos_config(**gamma_extra: Any) -> dict[str, Any]:
    gamma_args = ["--sim-startup-seconds", "3", *gamma_extra.pop("extra_args", [])]
    return {
        "vllm_command": "llmux-sim",
        "policy": {"min_active_secs": 0, "request_timeout_secs": 60},
        "models": {
            "alpha": sim_model(free_port(), sleep_level=1, drain_timeout_secs=DRAIN_TIMEOUT_SECS),
            "beta": sim_model(free_port(), sleep_level=2, drain_timeout_secs=DRAIN_TIMEOUT_SECS),
            "gamma": sim_model(
                free_port(),
                sleep_level=5,
                drain_timeout_secs=DRAIN_TIMEOUT_SECS,
                extra_args=gamma_args,
            ),
        },
    }


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
        self.web = self._spawn("web", [sys.executable, "-m", "daphne", "-e", endpoint, ASGI_APP])
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


def stream_lines(base_url: str, model: str, max_tokens: int) -> list[str]:
    """A streamed chat completion read to its end (in a thread); returns its data lines."""
    import asyncio

    async def read() -> list[str]:
        payload = {
            "model": model,
            "messages": [{"role": "user", "content": "a long story"}],
            "max_tokens": max_tokens,
            "stream": True,
        }
        lines = []
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base_url}/chat/completions", json=payload) as response,
        ):
            assert response.status == 200, await response.text()
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    lines.append(line.removeprefix("data: "))
        return lines

    return asyncio.run(read())


def test_a_worker_killed_during_a_cold_start_is_repaired_and_nothing_runs_twice(
    cluster: MakeCluster,
) -> None:
    llmux: Cluster = cluster(chaos_config())
    server = llmux.llmux
    assert ask(server, "alpha")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        interrupted = pool.submit(ask, server, "gamma")
        wait_for_state(server, "gamma", "starting")
        (gamma,) = simulator_processes(llmux.model_path("gamma"))
        time.sleep(0.5)  # well inside its three-second start-up
        llmux.kill_9(llmux.worker)
        assert gamma.is_running(), "engines must outlive the worker"
        llmux.start_worker()
        # The restarted worker closes the dead switch before it takes work (not once the
        # dead worker's 15-second lease expires): the waiting client hears why at once.
        with pytest.raises(openai.APIStatusError) as caught:
            interrupted.result(timeout=5)
    assert caught.value.status_code == 503
    assert "worker" in str(caught.value.message), caught.value.message
    assert llmux.switch_requests("gamma") == [("failed", "the worker running this switch died")]
    # The half-started engine is stopped, not adopted as if it were ready.
    wait_for_state(server, "gamma", "stopped")
    assert gone(gamma)
    assert server.states()["alpha"] == "sleeping"
    assert one_process_per_model(llmux.database) == []

    assert ask(server, "gamma")
    assert ask(server, "alpha")
    assert server.states() == {"alpha": "running", "gamma": "stopped"}  # beta never ran
    assert len(simulator_processes(llmux.model_path("gamma"))) == 0
    assert one_process_per_model(llmux.database) == []
    assert llmux.open_switches() == []


def test_a_worker_killed_while_draining_resumes_the_model_and_its_streams_finish(
    cluster: MakeCluster,
) -> None:
    llmux: Cluster = cluster(chaos_config())
    server = llmux.llmux
    assert ask(server, "alpha")
    (alpha,) = simulator_processes(llmux.model_path("alpha"))
    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        # Four seconds of decoding each: the switch to beta drains alpha meanwhile.
        streams = eight_streams_on_alpha(pool, llmux)
        interrupted = pool.submit(ask, server, "beta")
        wait_for_state(server, "alpha", "draining")
        llmux.kill_9(llmux.worker)
        llmux.start_worker()
        with pytest.raises(openai.APIStatusError) as caught:
            interrupted.result(timeout=5)
        assert caught.value.status_code == 503
        # The drain was never finished: alpha serves again and every stream ends normally.
        for stream in streams:
            lines = stream.result(timeout=60)
            assert lines[-1] == "[DONE]", lines[-3:]
            assert not [line for line in lines if '"error"' in line]
    assert llmux.switch_requests("beta") == [("failed", "the worker running this switch died")]
    wait_for_state(server, "alpha", "running")
    assert alpha.is_running()
    assert simulator_processes(llmux.model_path("alpha")) == [alpha]

    assert ask(server, "beta")
    assert server.states() == {"alpha": "sleeping", "beta": "running"}
    assert simulator_processes(llmux.model_path("alpha")) == [alpha]  # slept, not restarted
    assert one_process_per_model(llmux.database) == []
    assert llmux.open_switches() == []


def test_a_web_process_killed_during_streams_and_a_switch_leaves_nothing_behind(
    cluster: MakeCluster,
) -> None:
    llmux: Cluster = cluster(chaos_config())
    server = llmux.llmux
    assert ask(server, "alpha")
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        streams = eight_streams_on_alpha(pool, llmux)
        # Requests waiting for gamma: their demand is in the web process's presence row.
        waiting = [pool.submit(ask, server, "gamma") for _ in range(10)]
        wait_for_state(server, "alpha", "draining")
        llmux.kill_9(llmux.web)
        cut: list[concurrent.futures.Future[Any]] = [*streams, *waiting]
        for future in cut:
            with pytest.raises((aiohttp.ClientError, openai.APIConnectionError)):
                future.result(timeout=60)
    # The engine hears that its clients are gone: nothing is left generating.
    wait_until(lambda: llmux_load(llmux, "alpha") == 0, timeout=10, what="alpha to go idle")
    llmux.start_web()
    # The switch the dead web process asked for ends (it runs or is skipped: nobody waits).
    wait_until(lambda: llmux.open_switches() == [], timeout=60, what="the switch queue to empty")

    assert ask(server, "alpha")
    before = int(server.query("SELECT COALESCE(MAX(id), 0) FROM models_app_swapevent")[0][0])
    assert ask(server, "gamma")  # a following switch drains alpha without waiting for anyone
    swaps = server.swaps()
    later = server.query(
        "SELECT from_name, to_name, outcome, forced_drain, drain_ms FROM models_app_swapevent "
        "WHERE id > ? ORDER BY id",
        before,
    )
    assert [row[:4] for row in later] == [("alpha", "gamma", "succeeded", 0)], swaps
    assert later[0][4] < 1000, later
    assert live_waiting_demand(server) == [{}]  # only the new web process, waiting for nothing
    assert one_process_per_model(llmux.database) == []


def gone(process: psutil.Process) -> bool:
    """Exited (a zombie whose parent died waits for init to reap it: gone too)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def live_waiting_demand(server: Llmux) -> list[dict[str, Any]]:
    """The waiting demand of web processes that heartbeat (a killed one's row goes stale)."""
    recent = datetime.now(UTC) - timedelta(seconds=3)
    rows = server.query("SELECT heartbeat_at, waiting FROM models_app_webinstance")
    return [
        json.loads(waiting)
        for heartbeat, waiting in rows
        if datetime.fromisoformat(heartbeat).replace(tzinfo=UTC) >= recent
    ]


def eight_streams_on_alpha(
    pool: concurrent.futures.ThreadPoolExecutor, llmux: Cluster
) -> list[concurrent.futures.Future[list[str]]]:
    """Eight long streams (4,000 tokens each) on alpha, once all eight are decoding."""
    base_url = llmux.llmux.base_url
    streams = [pool.submit(stream_lines, base_url, "alpha", 4000) for _ in range(8)]
    wait_until(lambda: llmux_load(llmux, "alpha") == 8, timeout=30, what="eight streams on alpha")
    return streams


def llmux_load(llmux: Cluster, model: str) -> int:
    """Requests in flight on a model's engine, asked of the engine itself."""
    import urllib.request

    url = f"http://127.0.0.1:{llmux.config['models'][model]['port']}/load"
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(json.loads(response.read())["server_load"])
