"""Start `python -m llmux_site.simulator serve …` as a real process and talk to it synchronously.

Kept apart from conftest.py so tests/core can start simulated engines the same way.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from llmux_site.core.addresses import ListenAddress

REPO_ROOT = Path(__file__).resolve().parents[2]
# Small weights and KV cache keep start-up and every sleep/wake cycle in the milliseconds.
FAST_ARGS = (
    "--enable-sleep-mode",
    "--sim-startup-seconds",
    "0",
    "--sim-weights-bytes",
    "64KiB",
    "--sim-kv-bytes",
    "256KiB",
)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    address: ListenAddress,
    method: str,
    path: str,
    body: Any = None,
    *,
    timeout: float = 10.0,
) -> Reply:
    """One blocking HTTP exchange with an engine; raises OSError/TimeoutError on failure."""
    conn: http.client.HTTPConnection
    if address.uds is not None:
        conn = UnixHTTPConnection(address.uds, timeout)
    else:
        conn = http.client.HTTPConnection(address.host, address.port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return Reply(response.status, response.read(), dict(response.getheaders()))
    finally:
        conn.close()


@dataclass
class SimEngine:
    """A running simulator process (its own session and process group)."""

    proc: subprocess.Popen[bytes]
    address: ListenAddress
    log_path: Path
    ledger_dir: Path
    cache_dir: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str, *, timeout: float = 10.0) -> Reply:
        return http_request(self.address, "GET", path, timeout=timeout)

    def post(self, path: str, body: Any = None, *, timeout: float = 10.0) -> Reply:
        return http_request(self.address, "POST", path, body, timeout=timeout)

    def state(self) -> dict[str, Any]:
        reply = self.get("/sim/state")
        assert reply.status == 200, reply
        state: dict[str, Any] = reply.json()
        return state

    def set_faults(self, *specs: str) -> Reply:
        return self.post("/sim/faults", {"faults": list(specs)})

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_healthy(self, timeout: float = 15.0, *, path: str = "/health") -> float:
        """Seconds from spawn until `path` answered 200; fails fast if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited {self.proc.returncode}:\n{self.log_text()}")
            with contextlib.suppress(OSError):
                if self.get(path, timeout=1.0).status == 200:
                    return time.monotonic() - self.started_at
            time.sleep(0.02)
        raise TimeoutError(f"engine not answering {path} after {timeout}s:\n{self.log_text()}")

    def wait_listening(self, timeout: float = 15.0) -> float:
        """Like wait_healthy, for engines whose /health is faulty on purpose."""
        return self.wait_healthy(timeout, path="/sim/state")

    def wait_exit(self, timeout: float = 5.0) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill_group(self) -> None:
        """SIGKILL the whole process group and wait until every member is gone."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 5
        while group_alive(self.proc.pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"process group {self.proc.pid} survived SIGKILL")
            time.sleep(0.02)


def group_alive(pgid: int) -> bool:
    """True while a member of the group runs; zombies (exited, awaiting a reaper) don't count."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False


@dataclass
class SimLauncher:
    """Starts simulators under `root` (logs, weights cache, ledger); kills them all on `close`."""

    root: Path
    socket_dir: Path
    engines: list[SimEngine] = field(default_factory=list)

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def ledger_dir(self) -> Path:
        return self.root / "ledger"

    def start(
        self,
        *args: str,
        model: str = "llmux-sim/test",
        uds: bool = False,
        fast: bool = True,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> SimEngine:
        """Spawn an engine with `args` after the defaults; wait for /health unless told not to."""
        name = f"engine{len(self.engines)}"
        address = (
            ListenAddress.unix(str(self.socket_dir / f"{name}.sock"))
            if uds
            else ListenAddress.tcp(free_port())
        )
        argv = [sys.executable, "-m", "llmux_site.simulator", "serve", model]
        argv += address.cli_args() + list(FAST_ARGS if fast else ()) + list(args)
        log_path = self.root / f"{name}.log"
        self.root.mkdir(parents=True, exist_ok=True)
        full_env = {
            **os.environ,
            "LLMUX_SIM_CACHE_DIR": str(self.cache_dir),
            "LLMUX_SIM_LEDGER_DIR": str(self.ledger_dir),
            "PYTHONPATH": str(REPO_ROOT),
            **(env or {}),
        }
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        engine = SimEngine(proc, address, log_path, self.ledger_dir, self.cache_dir)
        self.engines.append(engine)
        if wait:
            engine.wait_healthy()
        return engine

    def close(self) -> None:
        for engine in self.engines:
            engine.kill_group()


@contextlib.contextmanager
def launch_sims(root: Path) -> Iterator[SimLauncher]:
    """A SimLauncher whose engines are all killed (process groups and all) on exit."""
    # tmp_path can be too long for a unix socket path (107 bytes): sockets get a short dir.
    socket_dir = Path(tempfile.mkdtemp(prefix="llmux-", dir="/tmp"))
    launcher = SimLauncher(root=root, socket_dir=socket_dir)
    try:
        yield launcher
    finally:
        try:
            launcher.close()
        finally:
            shutil.rmtree(socket_dir, ignore_errors=True)
