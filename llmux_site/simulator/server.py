"""Run one simulated engine as a process: start-up, listening, signals, children, clean exit."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from aiohttp import web

from llmux_site.core.gpu_ledger import LedgerWriter
from llmux_site.simulator.app import build_app
from llmux_site.simulator.config import SimConfig
from llmux_site.simulator.engine import Engine, crash_now, log
from llmux_site.simulator.utilization import report_utilization
from llmux_site.simulator.weights import CpuMemory, MemoryBackend, resolve_weights_source

MIB = 1024 * 1024
# In-flight streams get this long to finish when the engine is told to stop.
SHUTDOWN_GRACE_S = 0.5


def make_memory(config: SimConfig, weights_bytes: int) -> MemoryBackend:
    """The memory backend for --device."""
    if config.device == "cuda":
        from llmux_site.simulator.weights_cuda import CudaMemory

        return CudaMemory(weights_bytes)
    return CpuMemory(weights_bytes)


def visible_gpu_ids(environ: dict[str, str] | None = None, *, count: int = 1) -> list[int]:
    """The first `count` GPU ids of CUDA_VISIBLE_DEVICES (non-numeric ids skipped), else [0]."""
    env = os.environ if environ is None else environ
    raw = env.get("CUDA_VISIBLE_DEVICES", "")
    ids = [int(part) for part in raw.split(",") if part.strip().isdigit()]
    return ids[: max(1, count)] or [0]


def spawn_children(count: int) -> list[subprocess.Popen[bytes]]:
    """Children in this process group that outlive this process's death, as vLLM's do."""
    argv = [sys.executable, "-m", "llmux_site.simulator.child", str(os.getpid())]
    return [subprocess.Popen(argv, stdin=subprocess.DEVNULL) for _ in range(count)]


def stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(timeout=2)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def refuse_taken_socket_path(path: Path) -> None:
    """Fail as vLLM's own bind does when the socket path is there, stale or not.

    vLLM binds its Unix socket itself: a file left at the path (its own, from a run that
    died or stopped: it never removes it) fails the start with "Address already in use".
    asyncio would quietly replace a stale socket; the simulator must not, or whatever
    starts engines would never learn to clean up after vLLM (issue 13, finding 2).
    """
    if os.path.lexists(path):
        raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))


def install_signal_handlers(engine: Engine, stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT stop the engine gracefully (unless the ignore-sigterm fault is on)."""
    loop = asyncio.get_running_loop()

    def on_sigterm() -> None:
        # Read at signal time: the fault can be switched on through /sim/faults.
        if engine.faults.ignore_sigterm:
            log("ignoring SIGTERM (injected fault)")
            return
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    loop.add_signal_handler(signal.SIGINT, stop.set)


def bind_address(config: SimConfig) -> socket.socket:
    """The engine's socket, bound but not listening, as vLLM binds it before it loads.

    vLLM binds its address first (`--uds`: the socket file appears) and listens only once
    it serves, so through its whole start a client is refused ("Connection refused"), and
    an address in use fails the start at once.
    """
    if config.uds is not None:
        refuse_taken_socket_path(Path(config.uds))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: str | tuple[str, int] = config.uds
    else:
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        address = (config.host, config.port)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


async def _wait_or_stop(seconds: float, stop: asyncio.Event) -> bool:
    """Sleep `seconds` unless asked to stop first; True when asked to stop."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def serve(config: SimConfig) -> int:
    """Load, listen, serve until SIGTERM/SIGINT, clean up. Returns the exit status."""
    stop = asyncio.Event()
    source = resolve_weights_source(
        model_path=config.model_path,
        weights_file=config.weights_file,
        cache_dir=config.cache_dir,
        seed=config.seed,
        size=config.weights_bytes,
        load_bytes_per_sec=config.load_bytes_per_sec,
    )
    gpu_ids = visible_gpu_ids(count=config.tensor_parallel_size)
    # vLLM's CPU build holds no GPU memory: nothing for a GPU probe to read.
    ledger = None
    if config.platform != "cpu":
        ledger = LedgerWriter(config.ledger_dir, model=config.model_name, gpu_ids=gpu_ids)
    engine = Engine(config, make_memory(config, source.size), source, ledger)
    install_signal_handlers(engine, stop)
    children = spawn_children(config.child_processes)
    runner = web.AppRunner(
        build_app(engine), handler_cancellation=True, access_log=None, shutdown_timeout=0.1
    )
    reporter: asyncio.Task[None] | None = None
    try:
        listener = bind_address(config)
        await engine.load()
        if ledger is not None:
            reporter = asyncio.create_task(report_utilization(engine.inflight, ledger))
        if "startup" in config.faults.crash:
            crash_now("startup")
        delay = config.startup_seconds + config.faults.start_delay
        if await _wait_or_stop(delay, stop):
            return 0
        await runner.setup()
        await web.SockSite(runner, listener).start()  # listens: clients are served from now
        log(
            f"serving {config.model_path} as {', '.join(config.served_model_names)} on "
            f"{config.listen_description()} (weights {source.size / MIB:.1f} MiB from "
            f"{source.path}, kv {config.kv_bytes / MIB:.1f} MiB, device {config.device})"
        )
        await stop.wait()
        log("shutting down")
        return 0
    finally:
        if reporter is not None:
            reporter.cancel()  # before the ledger entry goes, so nothing writes it again
        await runner.cleanup()
        engine.close()
        # The socket file stays, as vLLM leaves it: whoever starts the engine removes it.
        stop_children(children)


def run(config: SimConfig) -> int:
    """Blocking entry point used by the CLI."""
    try:
        return asyncio.run(serve(config))
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"llmux-sim: error: {exc}", file=sys.stderr)
        return 1
