#!/usr/bin/env python3
"""Benchmark the gateway as users run it: `llmux serve` (the README's command) vs the engine.

For each code tree given (``--tree NAME=DIR``, default this checkout), starts
``python manage.py llmux serve --config FILE`` from that tree with one simulated engine
(20 ms to the first token, as in scripts/bench_gateway.py), brings the model up, and
measures at ``--clients`` concurrent clients the engine directly and the gateway, with API
keys off and on (a real key, checked on every request). Trees are measured in turns,
``--rounds`` times, so two commits compared in one sitting see the same machine.

    .venv/bin/python scripts/bench_serve.py --tree before=/tmp/before --tree after=. [--quick]

Prints a markdown table; ``--json`` the raw figures too. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import free_port, machine, run_loadgen, wait_ready

REPO = Path(__file__).resolve().parents[1]
MODEL = "bench"
SERVED = "bench/model"  # the engine's own name (its model_path); the gateway rewrites to it
ENGINE_ARGS = [
    "--sim-response-delay-ms",
    "20",
    "--sim-tokens-per-sec",
    "0",
    "--sim-weights-bytes",
    "1MiB",
    "--sim-startup-seconds",
    "0",
]
KEY_SCRIPT = (
    "from models_app.services.api_keys import create_key; print(create_key('bench').plaintext)"
)


def serve_env(data_dir: Path, tree: Path, keys: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    return env | {
        "LLMUX_DATA_DIR": str(data_dir),
        "LLMUX_DEMO_REGISTRY": "false",
        "LLMUX_REQUIRE_API_KEY": "on" if keys else "off",
        "PYTHONPATH": str(tree),  # the tree's own code, whatever the venv installed
        "PYTHONUNBUFFERED": "1",
    }


@contextmanager
def served(tree: Path, keys: bool) -> Iterator[tuple[int, int, str | None]]:
    """(gateway port, engine port, key or None) of a running `llmux serve` from `tree`."""
    with tempfile.TemporaryDirectory(prefix="llmux-bench-serve-") as tmp:
        data = Path(tmp) / "data"
        port, engine = free_port(), free_port()
        config = Path(tmp) / "llmux.json"
        model = {"model_path": SERVED, "port": engine, "extra_args": ENGINE_ARGS}
        config.write_text(json.dumps({"vllm_command": "llmux-sim", "models": {MODEL: model}}))
        env = serve_env(data, tree, keys)
        argv = [sys.executable, "manage.py", "llmux", "serve", "--config", str(config)]
        with open(Path(tmp) / "serve.log", "ab") as log:
            proc = subprocess.Popen(
                [*argv, "--port", str(port)],
                cwd=tree,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_ready(f"http://127.0.0.1:{port}/login/", timeout=120)
            key = _make_key(tree, env) if keys else None
            _bring_up(port, key)
            yield port, engine, key
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


def _make_key(tree: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", KEY_SCRIPT],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def _bring_up(port: int, key: str | None) -> None:
    """Cold-start the model and wait until the gateway knows the key (it reloads keys)."""
    deadline = time.monotonic() + 120
    while True:
        result = run_loadgen(
            "concurrent",
            url=f"http://127.0.0.1:{port}/v1/chat/completions",
            model=MODEL,
            clients=1,
            seconds=0.5,
            api_key=key,
        )
        if result["errors"] == 0 and result["total_requests"] > 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway on {port} did not answer 200: {result}")
        time.sleep(1)


def measure_tree(tree: Path, clients: int, seconds: float) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for keys in (False, True):
        with served(tree, keys) as (port, engine, key):
            for name, target in (("direct", engine), ("serve", port)):
                if name == "direct" and keys:
                    continue  # the engine has no keys: measured once per tree
                label = name if name == "direct" else f"serve_keys_{'on' if keys else 'off'}"
                results[label] = run_loadgen(
                    "concurrent",
                    url=f"http://127.0.0.1:{target}/v1/chat/completions",
                    model=MODEL if name == "serve" else SERVED,
                    clients=clients,
                    seconds=seconds,
                    api_key=key if name == "serve" else None,
                )
                print(tree, label, results[label], file=sys.stderr)
    return results


def summarise(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The median of each figure over the rounds."""
    return {
        label: {
            figure: statistics.median(run[label][figure] for run in runs)
            for figure in ("rps", "p50_ms", "p99_ms", "errors")
        }
        for label in runs[0]
    }


def report(summary: dict[str, dict[str, dict[str, float]]], args: argparse.Namespace) -> str:
    when = datetime_utc()
    lines = [
        f"`llmux serve` gateway, {args.clients} clients, {args.seconds:g} s per measurement, "
        f"median of {args.rounds} round(s), {when}, {machine()}",
        "",
        "| tree | direct req/s | keys off req/s | ratio | keys on req/s | ratio | "
        "p99 added off / on (ms) | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, figures in summary.items():
        direct, off, on = (figures[k] for k in ("direct", "serve_keys_off", "serve_keys_on"))
        errors = int(direct["errors"] + off["errors"] + on["errors"])
        lines.append(
            f"| {name} | {direct['rps']:.0f} | {off['rps']:.0f} | {off['rps'] / direct['rps']:.2f}"
            f" | {on['rps']:.0f} | {on['rps'] / direct['rps']:.2f}"
            f" | {off['p99_ms'] - direct['p99_ms']:+.1f} / {on['p99_ms'] - direct['p99_ms']:+.1f}"
            f" | {errors} |"
        )
    names = list(summary)
    if len(names) == 2:
        first, second = (summary[n] for n in names)
        for keys in ("off", "on"):
            label = f"serve_keys_{keys}"
            ratio = second[label]["rps"] / first[label]["rps"]
            lines.append(f"\n{names[1]} / {names[0]}, keys {keys}: requests/s x{ratio:.2f}")
    return "\n".join(lines)


def datetime_utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=DIR of a checkout")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 s per measurement, one round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 3.0, 1
    trees = dict(item.split("=", 1) for item in args.tree) or {"this": str(REPO)}
    runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            runs[name].append(measure_tree(Path(tree).resolve(), args.clients, args.seconds))
    summary = {name: summarise(results) for name, results in runs.items()}
    if args.json:
        print(json.dumps({"runs": runs, "summary": summary}, indent=2))
    print(report(summary, args))


if __name__ == "__main__":
    main()
