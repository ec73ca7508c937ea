"""Fixtures that run the gateway under real daphne in front of real simulated engines.

``gateway_stack`` (module scope) starts three engines (TCP, unix socket, and one that streams
slowly) and one daphne serving ``tests.gateway.asgi_app`` with a StaticBackend that routes
a set of public names onto them, including names whose acquire is slow, fails, or never
finishes, and one whose engine does not exist. ``start_gateway`` starts a daphne of its own
for tests that break their engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from aiohttp import web

from llmux_site.core.addresses import ListenAddress
from tests.plugins.engines import EngineSpawner, SpawnedEngine, free_port
from tests.plugins.process_guard import allow_process

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = "tests.gateway.asgi_app:application"
# The web server llmux runs: daphne with its request limits (llmux_site.webserver).
WEB_SERVER = ("-m", "llmux_site.webserver")
FAST_ENGINE = ("--sim-startup-seconds", "0", "--sim-weights-bytes", "256KiB")
REQUEST_TIMEOUT = 1.5
MAX_BODY = 64 * 1024


@dataclass
class Gateway:
    """One daphne process serving the test gateway."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **options: Any) -> openai.OpenAI:
        """The official client, pointed at the gateway; no retries, so errors show at once."""
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key="sk-client-key", max_retries=0, **options
        )

    def counts(self) -> dict[str, dict[str, int]]:
        """The StaticBackend's acquire/release counts per model."""
        with urllib.request.urlopen(f"{self.url}/_backend", timeout=5) as reply:
            return json.loads(reply.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def launch_gateway(
    config: Mapping[str, Any], log_dir: Path, env: Mapping[str, str] | None = None
) -> Gateway:
    """Start daphne on a free port with ``config`` (and ``env``) and wait until it answers."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"daphne-{port}.log"
    env = {
        **os.environ,
        "LLMUX_GATEWAY_CONFIG": json.dumps(config),
        "LLMUX_GATEWAY_MAX_BODY_BYTES": str(MAX_BODY),
        "LLMUX_MAX_BODY_BYTES": str(MAX_BODY),
        **(env or {}),
    }
    argv = [sys.executable, *WEB_SERVER, "-b", "127.0.0.1", "-p", str(port), "-v", "0", APP]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    gateway = Gateway(port, process, log_path)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{gateway.url}/v1/models", timeout=1):
                return gateway
        except (urllib.error.URLError, OSError):
            if process.poll() is not None or time.monotonic() > deadline:
                gateway.stop()
                raise RuntimeError(f"daphne did not start:\n{log_path.read_text()}") from None
            time.sleep(0.05)


def upstream(address: ListenAddress) -> dict[str, Any]:
    return {"uds": address.uds} if address.uds else {"port": address.port}


@dataclass
class GatewayStack:
    """The module's engines and the gateway in front of them."""

    gateway: Gateway
    tcp: SpawnedEngine
    uds: SpawnedEngine
    slow: SpawnedEngine

    def engine_client(self, engine: SpawnedEngine) -> openai.OpenAI:
        """The official client talking to an engine directly (over its unix socket if any)."""
        http_client = None
        if engine.address.uds:
            http_client = httpx2.Client(transport=httpx2.HTTPTransport(uds=engine.address.uds))
        return openai.OpenAI(
            base_url=f"{engine.base_url}/v1", api_key="x", max_retries=0, http_client=http_client
        )


def stack_config(tcp: SpawnedEngine, uds: SpawnedEngine, slow: SpawnedEngine) -> dict[str, Any]:
    at_tcp = upstream(tcp.address)
    served = "sim/tcp"
    return {
        "request_timeout": REQUEST_TIMEOUT,
        "models": [
            # A public name that differs from the engine's: the gateway rewrites `model`.
            {"name": "chat", "upstream": at_tcp, "served_name": served, "aliases": ["chat-v1"]},
            {"name": served, "upstream": at_tcp},
            {"name": "over-uds", "upstream": upstream(uds.address), "served_name": "sim/uds"},
            {"name": "slow", "upstream": upstream(slow.address), "served_name": "sim/slow"},
            {"name": "switching", "upstream": at_tcp, "served_name": served, "acquire_delay": 0.4},
            {
                "name": "broken",
                "upstream": at_tcp,
                "acquire_delay": 0.05,
                "acquire_failure": "the engine ran out of GPU memory while loading",
            },
            {"name": "stuck", "upstream": at_tcp, "acquire_delay": 3600},
            {"name": "gone", "upstream": {"port": free_port()}},
        ],
    }


@pytest.fixture(scope="module")
def gateway_stack(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Generator[GatewayStack, None, None]:
    """Three engines and one gateway, shared by a module's tests (they only read)."""
    root = tmp_path_factory.mktemp("gateway-stack")
    with short_dir() as sockets:
        spawner = EngineSpawner(root=root / "engines", socket_dir=sockets)
        gateway: Gateway | None = None
        try:
            tcp = spawner("sim/tcp", extra_args=FAST_ENGINE, name="tcp")
            uds = spawner("sim/uds", uds=True, extra_args=FAST_ENGINE, name="uds")
            slow = spawner(
                "sim/slow", extra_args=(*FAST_ENGINE, "--sim-tokens-per-sec", "20"), name="slow"
            )
            gateway = launch_gateway(stack_config(tcp, uds, slow), root / "logs")
            for pid in [engine.process.pid for engine in spawner.engines] + [gateway.process.pid]:
                allow_process(pytestconfig, pid)
            yield GatewayStack(gateway, tcp, uds, slow)
        finally:
            if gateway is not None:
                gateway.stop()
            errors = spawner.stop_all()
            if errors:
                raise errors[0]


@contextlib.contextmanager
def short_dir() -> Iterator[Path]:
    """A short directory under /tmp: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="llmux-gw-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class GatewayLauncher:
    """``start_gateway(models, request_timeout=…, env=…)`` → a Gateway stopped after the test."""

    log_dir: Path
    started: list[Gateway] = field(default_factory=list)

    def __call__(
        self,
        models: list[dict[str, Any]],
        request_timeout: float = 5.0,
        env: Mapping[str, str] | None = None,
    ) -> Gateway:
        gateway = launch_gateway(
            {"models": models, "request_timeout": request_timeout}, self.log_dir, env
        )
        self.started.append(gateway)
        return gateway


@pytest.fixture
def start_gateway(tmp_path: Path) -> Generator[GatewayLauncher, None, None]:
    launcher = GatewayLauncher(tmp_path / "gateway-logs")
    try:
        yield launcher
    finally:
        for gateway in launcher.started:
            gateway.stop()


@dataclass
class EchoUpstream:
    """An in-process HTTP server that answers with what it received (method, path, headers…)."""

    port: int
    seen: list[dict[str, Any]]


@pytest.fixture
def echo_upstream() -> Generator[EchoUpstream, None, None]:
    """A fake engine on a TCP port that echoes each request, run on a thread of its own."""
    seen: list[dict[str, Any]] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        # Errors the way servers around engines answer them, not in OpenAI's shape, for
        # the models named so.
        if b'"fail-plain"' in body:
            return web.Response(status=500, text="Internal Server Error")
        if b'"fail-detail"' in body:
            return web.json_response({"detail": "Not Found"}, status=404)
        record = {
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode(),
        }
        seen.append(record)
        return web.json_response(record, headers={"X-Upstream": "echo"})

    port = free_port()
    ready = threading.Event()
    stop: list[Callable[[], None]] = []

    def serve() -> None:
        async def main() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", echo)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            done = asyncio.Event()
            loop = asyncio.get_running_loop()
            stop.append(lambda: loop.call_soon_threadsafe(done.set))
            ready.set()
            await done.wait()
            await runner.cleanup()

        asyncio.run(main())

    thread = threading.Thread(target=serve, name="echo-upstream", daemon=True)
    thread.start()
    assert ready.wait(10), "echo upstream did not start"
    try:
        yield EchoUpstream(port, seen)
    finally:
        stop[0]()
        thread.join(10)
