#!/usr/bin/env python3
"""Benchmark the gateway as users run it: `llmux serve` (the README's command) vs the engine.

For each code tree given (``--tree NAME=DIR``, default this checkout), starts
``python manage.py llmux serve --config FILE`` from that tree with one simulated engine
(20 ms to the first token, as in scripts/bench_gateway.py), brings the model up, and
measures at ``--clients`` concurrent clients the engine directly and the gateway, with API
keys off and on (a real key with a requests-per-minute limit, checked and counted on every
request), in each deployment profile
(``--profiles``: embedded, production; scripts/bench_profiles.py). Trees are measured in
turns, ``--rounds`` times, so two commits compared in one sitting see the same machine.

    .venv/bin/python scripts/bench_serve.py --tree before=/tmp/before --tree after=. [--quick]
    .venv/bin/python scripts/bench_serve.py --before 91351cc   # that commit against this tree

``--before REV`` exports that commit of this repository (``git archive``) to a temporary
directory and measures it in turns with this checkout. While load runs, an admin has the
requests view open (``scripts/bench_watch.py`` polls ``/requests/data/`` as its page does)
in every tree that serves it; ``--no-watch`` measures without.

Prints a markdown table; ``--json`` the raw figures too. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
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
from bench_profiles import base_env, profile_env, web_processes
from bench_watch import RequestsViewWatcher, make_admin

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
# A limit no run reaches, so that every request is also counted in the key's window (in
# Redis, or in the data directory's SQLite file without it), as for a rate-limited key.
KEY_RPM_LIMIT = 10**9
KEY_SCRIPT = (
    "from models_app.services.api_keys import create_key; "
    f"print(create_key('bench', rpm_limit={KEY_RPM_LIMIT}).plaintext)"
)


def serve_env(data_dir: Path, tree: Path, keys: bool) -> dict[str, str]:
    return base_env() | {
        "LLMUX_DATA_DIR": str(data_dir),
        "LLMUX_DEMO_REGISTRY": "false",
        "LLMUX_REQUIRE_API_KEY": "on" if keys else "off",
        # The tree's own code first, whatever the venv installed.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }


@contextmanager
def served(tree: Path, keys: bool, profile: str) -> Iterator[tuple[int, int, str | None]]:
    """(gateway port, engine port, key or None) of a running `llmux serve` from `tree`."""
    with (
        tempfile.TemporaryDirectory(prefix="llmux-bench-serve-") as tmp,
        profile_env(profile, tree, serve_env(Path(tmp) / "data", tree, keys)) as env,
    ):
        port, engine = free_port(), free_port()
        config = Path(tmp) / "llmux.json"
        model = {"model_path": SERVED, "port": engine, "extra_args": ENGINE_ARGS}
        config.write_text(json.dumps({"vllm_command": "llmux-sim", "models": {MODEL: model}}))
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
            try:
                wait_ready(f"http://127.0.0.1:{port}/login/", timeout=120)
            except TimeoutError:
                log_tail = (Path(tmp) / "serve.log").read_text(errors="replace")[-3000:]
                raise TimeoutError(
                    f"llmux serve ({profile}) did not come up:\n{log_tail}"
                ) from None
            key = _make_key(tree, env) if keys else None
            make_admin(tree, env)
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


def measure_tree(
    tree: Path, clients: int, seconds: float, profile: str, watch: bool = True
) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for keys in (False, True):
        with served(tree, keys, profile) as (port, engine, key):
            for name, target in (("direct", engine), ("serve", port)):
                if name == "direct" and keys:
                    continue  # the engine has no keys: measured once per tree
                label = name if name == "direct" else f"serve_keys_{'on' if keys else 'off'}"
                watcher = RequestsViewWatcher(port).start() if watch else None
                results[label] = run_loadgen(
                    "concurrent",
                    url=f"http://127.0.0.1:{target}/v1/chat/completions",
                    model=MODEL if name == "serve" else SERVED,
                    clients=clients,
                    seconds=seconds,
                    api_key=key if name == "serve" else None,
                )
                results[label]["view_polls"] = watcher.stop() if watcher else 0
                print(tree, profile, label, results[label], file=sys.stderr)
    return results


def summarise(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The median of each figure over the rounds."""
    return {
        label: {
            figure: statistics.median(run[label][figure] for run in runs)
            for figure in ("rps", "p50_ms", "p99_ms", "errors", "view_polls")
        }
        for label in runs[0]
    }


Summary = dict[tuple[str, str], dict[str, dict[str, float]]]  # (tree, profile) -> figures

# The targets on the serve path, as ratios to the engine measured in the same run.
MIN_RATIO = 0.75  # requests/s through the gateway, keys off, over direct
MAX_P99_ADDED_MS = 50.0
MIN_KEYS_ON_OVER_OFF = 0.90


def _row(tree: str, profile: str, figures: dict[str, dict[str, float]]) -> str:
    direct, off, on = (figures[k] for k in ("direct", "serve_keys_off", "serve_keys_on"))
    errors = int(direct["errors"] + off["errors"] + on["errors"])
    ratio, added = off["rps"] / direct["rps"], off["p99_ms"] - direct["p99_ms"]
    keys = on["rps"] / off["rps"]
    met = ratio >= MIN_RATIO and added <= MAX_P99_ADDED_MS and keys >= MIN_KEYS_ON_OVER_OFF
    return (
        f"| {tree} | {profile} | {direct['rps']:.0f} | {off['rps']:.0f} | {ratio:.2f}"
        f" | {on['rps']:.0f} | {keys:.2f} | {added:+.1f} / {on['p99_ms'] - direct['p99_ms']:+.1f}"
        f" | {errors} | {'✓' if met else '✗'} |"
    )


def report(summary: Summary, args: argparse.Namespace) -> str:
    lines = [
        f"`llmux serve` gateway, {args.clients} clients, {args.seconds:g} s per measurement, "
        f"median of {args.rounds} round(s), web processes: "
        f"{web_processes()}, {datetime_utc()}, {machine()}",
        "",
        "| tree | profile | direct req/s | keys off req/s | / direct | keys on req/s | on / off"
        " | p99 added off / on (ms) | errors | targets |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [_row(tree, profile, figures) for (tree, profile), figures in summary.items()]
    lines.append(
        f"\nTargets: keys off at least {MIN_RATIO:.0%} of direct requests/s, p99 added at most "
        f"{MAX_P99_ADDED_MS:.0f} ms, keys on within {1 - MIN_KEYS_ON_OVER_OFF:.0%} of keys off."
    )
    trees = list(dict.fromkeys(tree for tree, _ in summary))
    if len(trees) == 2:
        for profile in dict.fromkeys(profile for _, profile in summary):
            first, second = summary[trees[0], profile], summary[trees[1], profile]
            for keys in ("off", "on"):
                label = f"serve_keys_{keys}"
                ratio = second[label]["rps"] / first[label]["rps"]
                added = [f[label]["p99_ms"] - f["direct"]["p99_ms"] for f in (first, second)]
                polls = [f[label]["view_polls"] for f in (first, second)]
                lines.append(
                    f"\n{trees[1]} / {trees[0]}, {profile}, keys {keys}: requests/s x{ratio:.2f},"
                    f" p99 added {added[0]:+.1f} -> {added[1]:+.1f} ms"
                    f" (requests view polled {polls[0]:.0f} / {polls[1]:.0f} times)"
                )
    return "\n".join(lines)


def export_commit(rev: str) -> Path:
    """`rev` of this repository as a plain tree in a temporary directory (removed at exit)."""
    target = Path(tempfile.mkdtemp(prefix="llmux-bench-before-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev], cwd=REPO, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


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
    parser.add_argument("--profiles", default="embedded,production", help="comma-separated")
    parser.add_argument("--web-processes", help="llmux serve's; default: its own choice (auto)")
    parser.add_argument("--before", help="a commit measured against this checkout")
    parser.add_argument("--no-watch", action="store_true", help="no requests view open")
    args = parser.parse_args()
    if args.web_processes:
        os.environ["LLMUX_WEB_PROCESSES"] = args.web_processes
    if args.quick:
        args.seconds, args.rounds = 3.0, 1
    trees = dict(item.split("=", 1) for item in args.tree) or {"this": str(REPO)}
    if args.before:
        trees = {f"before ({args.before})": str(export_commit(args.before)), **trees}
    profiles = args.profiles.split(",")
    runs: dict[tuple[str, str], list[dict[str, dict[str, float]]]] = {
        (name, profile): [] for profile in profiles for name in trees
    }
    for _ in range(args.rounds):
        for profile in profiles:
            for name, tree in trees.items():
                figures = measure_tree(
                    Path(tree).resolve(), args.clients, args.seconds, profile, not args.no_watch
                )
                runs[name, profile].append(figures)
    summary = {key: summarise(results) for key, results in runs.items()}
    if args.json:
        named = {f"{tree}/{profile}": figures for (tree, profile), figures in summary.items()}
        print(json.dumps(named, indent=2))
    print(report(summary, args))


if __name__ == "__main__":
    main()
