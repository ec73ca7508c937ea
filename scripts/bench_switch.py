#!/usr/bin/env python3
"""Benchmark the switch orchestration overhead of llmux, embedded and with Redis.

For each profile it starts a whole llmux (`manage.py llmux serve`) in front of two
simulated engines (20 ms to the first token), alternates requests between them, and
measures for every switch the time from sending the request for the sleeping model to
the first byte of its answer. Beside them, two engines started the same way are timed
directly: the outgoing model's `/sleep?level=1` and the incoming model's `/wake_up`. The
orchestration overhead of a switch is its time to first byte minus that sleep and wake
(and so includes the readiness probe, the database hand-offs and the request itself).

    .venv/bin/python scripts/bench_switch.py [--switches 30] [--profiles embedded,redis]

Prints a markdown table with the machine and the date. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from bench_gateway import machine  # scripts/ is on the path when this runs
from bench_profiles import base_env, profile_env, web_processes

REPO = Path(__file__).resolve().parents[1]
SIM_ARGS = [
    "--sim-weights-bytes",
    "8MiB",
    "--sim-startup-seconds",
    "0",
    "--sim-response-delay-ms",
    "20",
    "--sim-tokens-per-sec",
    "0",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def llmux_env(data_dir: Path) -> dict[str, str]:
    return base_env() | {"LLMUX_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def llmux(profile: str, data_dir: Path) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """A running llmux with models `a` and `b`; yields its /v1 URL, data dir and env."""
    with profile_env(profile, REPO, llmux_env(data_dir)) as env:
        port = free_port()
        config = {
            "vllm_command": "llmux-sim",
            "policy": {"min_active_secs": 0, "sleep_level": 1},
            "models": {
                name: {"model_path": f"bench/{name}", "port": free_port(), "extra_args": SIM_ARGS}
                for name in ("a", "b")
            },
        }
        (data_dir / "bench.json").write_text(json.dumps(config))
        argv = [sys.executable, "manage.py", "llmux", "serve", "--port", str(port)]
        log = (data_dir / "serve.log").open("w")
        serve = subprocess.Popen(
            [*argv, "--config", str(data_dir / "bench.json")],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 90
            while "llmux is ready" not in (data_dir / "serve.log").read_text():
                if serve.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((data_dir / "serve.log").read_text())
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}/v1", data_dir, env
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=60)


async def first_byte(session: aiohttp.ClientSession, url: str, model: str) -> float:
    body = {
        "model": model,
        "stream": True,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}],
    }
    started = time.perf_counter()
    async with session.post(f"{url}/chat/completions", json=body) as resp:
        resp.raise_for_status()
        await resp.content.readany()
        elapsed = time.perf_counter() - started
        await resp.read()
    return elapsed


async def switch_times(url: str, switches: int) -> list[float]:
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for model in ("a", "b", "a"):  # cold-start both, leave `a` active and `b` asleep
            await first_byte(session, url, model)
        times = []
        for i in range(switches):
            times.append(await first_byte(session, url, "b" if i % 2 == 0 else "a"))
        return times


async def direct_times(rounds: int, tmp: Path) -> tuple[list[float], list[float]]:
    """Sleep (level 1) of one engine and wake of another, timed on the engines themselves."""
    ports = [free_port(), free_port()]
    env = os.environ | {
        "LLMUX_SIM_CACHE_DIR": str(tmp / "cache"),
        "LLMUX_SIM_LEDGER_DIR": str(tmp / "ledger"),
    }
    engines = [
        subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
            [
                sys.executable,
                "-m",
                "llmux_site.simulator",
                "serve",
                f"bench/{n}",
                "--port",
                str(p),
                "--enable-sleep-mode",
                *SIM_ARGS,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for n, p in zip(("a", "b"), ports, strict=True)
    ]
    sleeps: list[float] = []
    wakes: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            for port in ports:
                for _ in range(100):
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(f"http://127.0.0.1:{port}/health") as r:
                            if r.status == 200:
                                break
                    await asyncio.sleep(0.1)
            await session.post(f"http://127.0.0.1:{ports[1]}/sleep?level=1")
            for i in range(rounds):
                out, into = (ports[0], ports[1]) if i % 2 == 0 else (ports[1], ports[0])
                started = time.perf_counter()
                async with session.post(f"http://127.0.0.1:{out}/sleep?level=1") as r:
                    r.raise_for_status()
                sleeps.append(time.perf_counter() - started)
                started = time.perf_counter()
                async with session.post(f"http://127.0.0.1:{into}/wake_up") as r:
                    r.raise_for_status()
                wakes.append(time.perf_counter() - started)
    finally:
        for engine in engines:
            os.killpg(engine.pid, signal.SIGTERM)
            engine.wait(timeout=30)
    return sleeps, wakes


def phases(data_dir: Path, env: dict[str, str]) -> dict[str, float]:
    """Median per-phase milliseconds of the benchmark's wake switches."""
    code = (
        "import json,statistics as s;from models_app.models import SwapEvent as E;"
        "q=E.objects.filter(bringup='wake');"
        "f=['drain_ms','evict_ms','bringup_ms','readiness_ms','total_ms'];"
        "print(json.dumps({k:s.median([getattr(e,k) or 0 for e in q]) for k in f}))"
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switches", type=int, default=30)
    parser.add_argument("--profiles", default="embedded,redis")
    parser.add_argument("--web-processes", help="llmux serve's; default: its own choice (auto)")
    args = parser.parse_args()
    if args.web_processes:
        os.environ["LLMUX_WEB_PROCESSES"] = args.web_processes
    rows = []
    with tempfile.TemporaryDirectory(prefix="llmux-bench-") as tmp:
        sleeps, wakes = asyncio.run(direct_times(args.switches, Path(tmp)))
        engine_ms = (statistics.median(sleeps) + statistics.median(wakes)) * 1000
        for profile in args.profiles.split(","):
            data = Path(tmp) / profile
            data.mkdir()
            with llmux(profile, data) as (url, data_dir, env):
                times = asyncio.run(switch_times(url, args.switches))
                phase = phases(data_dir, env)
            overhead = [t * 1000 - engine_ms for t in times]
            rows.append((profile, times, overhead, phase))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    web = web_processes()
    print(
        f"Switch orchestration overhead — {machine()}, {stamp}, {args.switches} switches, "
        f"web processes: {web}\n"
    )
    print(
        f"Engine alone: sleep L1 p50 {statistics.median(sleeps) * 1000:.1f} ms, "
        f"wake p50 {statistics.median(wakes) * 1000:.1f} ms (engine answers after 20 ms)\n"
    )
    print(
        "| profile | switch TTFB p50 (ms) | overhead p50 (ms) | overhead p90 (ms) | "
        "drain / evict / bring-up / readiness p50 (ms) | target |"
    )
    print("|---|---:|---:|---:|---|---|")
    # Issue 14's targets: 150 ms embedded, 50 ms with Redis (and PostgreSQL: the `redis`
    # profile; `sqlite-redis`, Redis without PostgreSQL, is held to the same).
    targets = {"embedded": 150.0, "redis": 50.0, "sqlite-redis": 50.0}
    for profile, times, overhead, phase in rows:
        p50 = statistics.median(overhead)
        target = targets.get(profile)
        verdict = "—" if target is None else f"≤ {target:.0f} {'✓' if p50 <= target else '✗'}"
        print(
            f"| {profile} | {statistics.median(times) * 1000:.1f} | {p50:.1f} | "
            f"{pct(overhead, 0.9):.1f} | {phase['drain_ms']:.1f} / {phase['evict_ms']:.1f} / "
            f"{phase['bringup_ms']:.1f} / {phase['readiness_ms']:.1f} | {verdict} |"
        )


if __name__ == "__main__":
    main()
