#!/usr/bin/env python3
"""Benchmark the gateway's hot path: direct engine vs nginx vs the gateway under daphne.

Starts two simulated engines (20 ms to the first token; one answers at once, one streams at
a fixed token rate), the gateway under daphne (``llmux_site.gateway.standalone`` with a
StaticBackend) and, when ``/usr/sbin/nginx`` exists, nginx proxying to the engine. An
aiohttp load generator runs in a process of its own and measures:

- one client, sequential: p50/p99 latency, direct vs gateway (the added milliseconds);
- 32 concurrent clients: requests/s and p99 (direct, nginx, gateway);
- 64 concurrent streams: SSE chunks/s and time-to-first-chunk p99 (direct vs gateway).

Prints a markdown table. ``--quick`` for a short run. Not part of the test suite.

    .venv/bin/python scripts/bench_gateway.py [--quick] [--daphne-verbosity 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[1]
NGINX = Path("/usr/sbin/nginx")
CHAT_BODY = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}


# --------------------------------------------------------------------------- load generator


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sequential(url: str, model: str, count: int) -> dict[str, float]:
    body = json.dumps({"model": model, **CHAT_BODY}).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        for i in range(count + count // 10):
            start = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            if i >= count // 10:  # the first tenth warms up
                latencies.append(time.perf_counter() - start)
    return {
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


async def concurrent(
    url: str, model: str, clients: int, seconds: float, api_key: str | None = None
) -> dict[str, float]:
    body = json.dumps({"model": model, **CHAT_BODY}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    latencies: list[float] = []
    errors = total = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(until: float, record: bool) -> None:
            nonlocal errors, total
            while time.perf_counter() < until:
                total += 1
                start = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                if record:
                    latencies.append(time.perf_counter() - start)

        warm = time.perf_counter() + min(1.0, seconds / 4)
        await asyncio.gather(*(client(warm, False) for _ in range(clients)))
        start = time.perf_counter()
        await asyncio.gather(*(client(start + seconds, True) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": errors,
        "total_requests": total,
    }


async def streams(
    url: str, model: str, count: int, seconds: float, tokens: int, period: float
) -> dict[str, float]:
    """``count`` streams, each restarting as soon as it ends; starts spread over ``period``.

    Staggered like independent users rather than 64 requests landing in the same
    millisecond every time; measured over ``seconds`` after one period of warm-up.
    """
    body = json.dumps(
        {"model": model, "prompt": "stream", "max_tokens": tokens, "stream": True}
    ).encode()
    headers = {"Content-Type": "application/json"}
    ttfc: list[float] = []
    chunks = 0
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        begin = time.perf_counter() + period
        until = begin + seconds

        async def stream(index: int) -> None:
            nonlocal chunks, errors
            await asyncio.sleep(index / count * period)
            while time.perf_counter() < until:
                start = time.perf_counter()
                first = True
                async with session.post(url, data=body, headers=headers) as resp:
                    if resp.status != 200:
                        errors += 1
                    async for line in resp.content:
                        if line.startswith(b"data: "):
                            now = time.perf_counter()
                            if first and start >= begin:
                                ttfc.append(now - start)
                            first = False
                            if begin <= now < until:
                                chunks += 1

        await asyncio.gather(*(stream(i) for i in range(count)))
    return {
        "chunks_per_s": chunks / seconds,
        "ttfc_p50_ms": percentile(ttfc, 0.5) * 1000,
        "ttfc_p99_ms": percentile(ttfc, 0.99) * 1000,
        "errors": errors,
    }


def loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.pop("kind")
    runner = {"sequential": sequential, "concurrent": concurrent, "streams": streams}[kind]
    return asyncio.run(runner(**spec))  # type: ignore[operator]


def run_loadgen(kind: str, **spec: Any) -> dict[str, Any]:
    """One measurement in a separate process, so the generator has its own interpreter."""
    done = subprocess.run(
        [sys.executable, __file__, "--loadgen", json.dumps({"kind": kind, **spec})],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Stack:
    """The processes of one benchmark run, stopped together by process group."""

    workdir: Path
    processes: list[subprocess.Popen[bytes]]

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 (the child owns it)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        log.close()
        self.processes.append(proc)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="llmux-bench-") as tmp:
        running = Stack(Path(tmp), [])
        try:
            yield running
        finally:
            running.stop()


def wait_ready(url: str, timeout: float = 30.0) -> None:
    async def poll() -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} did not come up")
                await asyncio.sleep(0.1)

    asyncio.run(poll())


def start_engine(run: Stack, name: str, port: int, tokens_per_sec: float) -> None:
    argv = [
        sys.executable,
        "-m",
        "llmux_site.simulator",
        "serve",
        name,
        "--port",
        str(port),
        "--sim-response-delay-ms",
        "20",
        "--sim-tokens-per-sec",
        str(tokens_per_sec),
        "--sim-weights-bytes",
        "1MiB",
        "--sim-startup-seconds",
        "0",
        "--sim-cache-dir",
        str(run.workdir / "cache"),
        "--sim-ledger-dir",
        str(run.workdir / "ledger"),
    ]
    run.start(f"engine-{name}", argv)
    wait_ready(f"http://127.0.0.1:{port}/health")


def start_gateway(run: Stack, port: int, routes: dict[str, int], verbosity: int) -> None:
    config = {
        "models": [{"name": name, "upstream": {"port": p}} for name, p in routes.items()],
    }
    argv = [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "-v",
        str(verbosity),
        "llmux_site.gateway.standalone:application",
    ]
    run.start("daphne", argv, {"LLMUX_GATEWAY_CONFIG": json.dumps(config)})
    wait_ready(f"http://127.0.0.1:{port}/v1/models")


NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  upstream engine {{ server 127.0.0.1:{engine}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://engine;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


def start_nginx(run: Stack, port: int, engine: int) -> None:
    conf = run.workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=run.workdir, port=port, engine=engine))
    run.start("nginx", [str(NGINX), "-c", str(conf), "-p", str(run.workdir)])
    wait_ready(f"http://127.0.0.1:{port}/health")


# --------------------------------------------------------------------------- report


def machine() -> str:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    seq, conc, strm = results["sequential"], results["concurrent"], results["streams"]
    nginx = conc.get("nginx") or {}
    gw_conc, gw_strm = conc["gateway"], strm["gateway"]
    ratio = gw_strm["chunks_per_s"] / strm["direct"]["chunks_per_s"] * 100
    added_ttfc = gw_strm["ttfc_p99_ms"] - strm["direct"]["ttfc_p99_ms"]
    cpu_per_request = gw_conc["gateway_cpu_s"] / gw_conc["total_requests"] * 1e6
    chunks = gw_strm["chunks_per_s"] * args.seconds_used * 2
    rows: list[tuple[str, float | None, float | None, float | None, str]] = [
        ("1 client p50 latency (ms)", seq["direct"]["p50_ms"], None, seq["gateway"]["p50_ms"], ""),
        ("1 client p99 latency (ms)", seq["direct"]["p99_ms"], None, seq["gateway"]["p99_ms"], ""),
        (
            "1 client added p50 (ms)",
            None,
            None,
            seq["gateway"]["p50_ms"] - seq["direct"]["p50_ms"],
            "≤ 2 ms",
        ),
        (
            f"{args.clients} clients req/s",
            conc["direct"]["rps"],
            nginx.get("rps"),
            gw_conc["rps"],
            "≥ 1,000",
        ),
        (
            f"{args.clients} clients p99 (ms)",
            conc["direct"]["p99_ms"],
            nginx.get("p99_ms"),
            gw_conc["p99_ms"],
            "",
        ),
        ("gateway CPU per request (µs)", None, None, cpu_per_request, ""),
        (
            f"{args.streams} streams chunks/s",
            strm["direct"]["chunks_per_s"],
            None,
            gw_strm["chunks_per_s"],
            f"≥ 97 % of direct: {ratio:.1f} %",
        ),
        (
            f"{args.streams} streams TTFC p99 (ms)",
            strm["direct"]["ttfc_p99_ms"],
            None,
            gw_strm["ttfc_p99_ms"],
            f"added ≤ 20 ms: {added_ttfc:+.1f} ms",
        ),
        ("gateway CPU per chunk (µs)", None, None, gw_strm["gateway_cpu_s"] / chunks * 1e6, ""),
    ]
    groups = (seq, conc, strm)
    errors = sum(r.get("errors", 0) for group in groups for r in group.values())
    foreign = [r["foreign_cpus"] for group in groups for r in group.values()]
    lines = [
        f"Gateway benchmark, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, "
        f"{machine()}; {'--quick' if args.quick else 'full'} run, daphne -v "
        f"{args.daphne_verbosity}; engine: 20 ms to the first token; streams: "
        f"{args.stream_tokens} tokens at {args.stream_tokens_per_sec:g} tokens/s each; "
        f"errors: {errors}; other processes on the machine kept "
        f"{min(foreign):.2f} to {max(foreign):.2f} CPUs busy during the measurements",
        "",
        "| measurement | direct | nginx | gateway | target |",
        "|---|---:|---:|---:|---|",
    ]
    for name, direct, via_nginx, gateway, target in rows:
        lines.append(f"| {name} | {fmt(direct)} | {fmt(via_nginx)} | {fmt(gateway)} | {target} |")
    return "\n".join(lines)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all CPUs)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(run: Stack, gateway_pid: int, kind: str, **spec: Any) -> dict[str, Any]:
    """One load-generator run, with the gateway's CPU and other processes' CPU beside it."""
    pids = [proc.pid for proc in run.processes]
    ours = sum(cpu_seconds(pid) for pid in pids) + children_cpu()
    gateway, busy, wall = cpu_seconds(gateway_pid), busy_seconds(), time.monotonic()
    result = run_loadgen(kind, **spec)
    wall = time.monotonic() - wall
    result["gateway_cpu_s"] = cpu_seconds(gateway_pid) - gateway
    ours = sum(cpu_seconds(pid) for pid in pids) + children_cpu() - ours
    # Other sessions on a shared box steal CPU from every row alike; say how much.
    result["foreign_cpus"] = max(0.0, (busy_seconds() - busy - ours) / wall)
    print(kind, spec.get("url"), result, file=sys.stderr)
    return result


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.seconds_used = 3.0 if args.quick else args.seconds
    count = 200 if args.quick else 1000
    with stack() as run:
        engine, stream_engine, gw = free_port(), free_port(), free_port()
        start_engine(run, "bench", engine, 0)
        start_engine(run, "bench-stream", stream_engine, args.stream_tokens_per_sec)
        start_gateway(
            run, gw, {"bench": engine, "bench-stream": stream_engine}, args.daphne_verbosity
        )
        gateway_pid = run.processes[-1].pid
        targets = {"direct": engine, "gateway": gw}
        if NGINX.exists() and not args.no_nginx:
            nginx = free_port()
            start_nginx(run, nginx, engine)
            targets["nginx"] = nginx
        urls = {k: f"http://127.0.0.1:{p}/v1/chat/completions" for k, p in targets.items()}
        results: dict[str, Any] = {"sequential": {}, "concurrent": {}, "streams": {}}
        for name in ("direct", "gateway"):
            results["sequential"][name] = measure(
                run, gateway_pid, "sequential", url=urls[name], model="bench", count=count
            )
        for name, url in urls.items():
            results["concurrent"][name] = measure(
                run,
                gateway_pid,
                "concurrent",
                url=url,
                model="bench",
                clients=args.clients,
                seconds=seconds,
            )
        rate = args.stream_tokens_per_sec
        stream_urls = {
            "direct": f"http://127.0.0.1:{stream_engine}/v1/completions",
            "gateway": f"http://127.0.0.1:{gw}/v1/completions",
        }
        for name, url in stream_urls.items():
            results["streams"][name] = measure(
                run,
                gateway_pid,
                "streams",
                url=url,
                model="bench-stream",
                count=args.streams,
                seconds=seconds * 2,
                tokens=args.stream_tokens,
                period=args.stream_tokens / rate if rate else 0.5,
            )
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run (3 s per measurement)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--stream-tokens", type=int, default=64, help="tokens per stream")
    parser.add_argument(
        "--stream-tokens-per-sec",
        type=float,
        default=50.0,
        help="decode rate of the streaming engine, per stream (0: as fast as it can)",
    )
    parser.add_argument("--daphne-verbosity", type=int, default=0, help="1 logs every request")
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the raw results too")
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        print(json.dumps(loadgen(json.loads(args.loadgen))))
        return
    results = benchmark(args)
    if args.json:
        print(json.dumps(results, indent=2))
    print(report(results, args))


if __name__ == "__main__":
    main()
