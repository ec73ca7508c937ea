"""Fixtures that start real engine processes (the simulator by default) and always stop them.

``spawn_engine`` goes through the same code the worker uses (``core.launch`` to build the
command, ``core.supervisor`` to spawn, health-wait and stop), with a plain aiohttp health
check so it does not depend on the engine client.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from llmux_site.core import processes, supervisor
from llmux_site.core.addresses import ListenAddress
from llmux_site.core.launch import EngineCommand, build_engine_command

T = TypeVar("T")

DEFAULT_MODEL = "llmux-sim/tiny"
STOP_GRACE = 5.0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside an async test's loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    outcome: dict[str, Any] = {}

    def runner() -> None:
        try:
            outcome["value"] = asyncio.run(make())
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=runner, name="engine-fixture-sync")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


async def wait_http_healthy(
    proc: processes.EngineProcess, address: ListenAddress, *, timeout: float
) -> float:
    """``supervisor.wait_healthy`` with ``GET /health == 200`` over TCP or a unix socket."""
    connector: aiohttp.BaseConnector = (
        aiohttp.UnixConnector(path=address.uds) if address.uds else aiohttp.TCPConnector()
    )
    client_timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:

        async def health() -> bool:
            try:
                async with session.get(f"{address.base_url()}/health") as response:
                    return response.status == 200
            except (TimeoutError, aiohttp.ClientError, OSError):
                return False

        return await supervisor.wait_healthy(proc, health, timeout=timeout, interval=0.05)


@pytest.fixture
def short_tmp_dir() -> Generator[Path, None, None]:
    """A short /tmp/llmux-XXXX directory: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="llmux-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    """A free loopback TCP port."""
    return free_port()


@dataclass
class SpawnedEngine:
    """An engine started by ``spawn_engine``."""

    name: str
    process: processes.EngineProcess
    address: ListenAddress
    command: EngineCommand
    log_path: Path
    startup_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return self.address.base_url()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class EngineSpawner:
    """Callable factory behind the ``spawn_engine`` fixture; remembers what it started."""

    root: Path
    socket_dir: Path
    engines: list[SpawnedEngine] = field(default_factory=list)

    @property
    def cache_dir(self) -> Path:
        return self.root / "sim-cache"

    @property
    def ledger_dir(self) -> Path:
        return self.root / "sim-ledger"

    def __call__(
        self,
        model_path: str = DEFAULT_MODEL,
        *,
        kind: str = "simulator",
        uds: bool = False,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        generic_argv: Sequence[str] = (),
        name: str | None = None,
        startup_timeout: float = 60.0,
        wait: bool = True,
    ) -> SpawnedEngine:
        name = name or f"engine{len(self.engines)}"
        address = (
            ListenAddress.unix(str(self.socket_dir / f"{name}.sock"))
            if uds
            else ListenAddress.tcp(free_port())
        )
        command = build_engine_command(
            kind,
            model_path=model_path,
            address=address,
            extra_args=list(extra_args),
            env=dict(env or {}),
            generic_argv=generic_argv,
        )
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.root / "logs" / f"{name}.log"
        overrides = {
            "LLMUX_SIM_CACHE_DIR": str(self.cache_dir),
            "LLMUX_SIM_LEDGER_DIR": str(self.ledger_dir),
            **command.env,
        }
        process = processes.spawn(
            processes.ProcessSpec(
                argv=command.argv, log_path=log_path, env=overrides, uds=address.uds
            )
        )
        engine = SpawnedEngine(name, process, address, command, log_path)
        self.engines.append(engine)
        if wait:
            engine.startup_seconds = run_sync(
                lambda: wait_http_healthy(process, address, timeout=startup_timeout)
            )
        return engine

    def stop_all(self) -> list[BaseException]:
        errors: list[BaseException] = []
        for engine in reversed(self.engines):
            try:
                supervisor.stop(engine.process, grace=STOP_GRACE)
            except Exception as exc:
                errors.append(exc)
        return errors


@pytest.fixture
def spawn_engine(tmp_path: Path, short_tmp_dir: Path) -> Generator[EngineSpawner, None, None]:
    """Factory: ``spawn_engine(model_path, kind=..., uds=..., extra_args=...)`` → SpawnedEngine.

    Waits until ``GET /health`` answers 200 (unless ``wait=False``) and stops every engine
    it started when the test ends, whatever happened in the test.
    """
    spawner = EngineSpawner(root=tmp_path / "engines", socket_dir=short_tmp_dir)
    try:
        yield spawner
    finally:
        errors = spawner.stop_all()
        if errors:
            raise errors[0]
