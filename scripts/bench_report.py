#!/usr/bin/env python3
"""Run the gateway, switch and checkpoint benchmarks back to back; write docs/PERFORMANCE.md.

    .venv/bin/python scripts/bench_report.py [--quick] [--before COMMIT]

`--before COMMIT` measures the serve path of that commit too, in turns with this tree
(`make bench BENCH_ARGS="--before 91351cc"`), and reports the ratio of requests/s.

All tables come from one run on one machine, so their figures can be compared.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "PERFORMANCE.md"

HEADER = """# Performance

Written by `make bench` (`scripts/bench_report.py`); every figure below comes from the one
run dated in each table, on the machine it names. Targets are those of the switching
issue. Other sessions share these 2-core machines: each table says how busy the machine
was, and a figure measured while it was busy is a lower bound of what llmux does.

## How to read it
- **Gateway**: the simulated engine answers after 20 ms. *direct* calls the engine,
  *nginx* is Debian's nginx as a reverse proxy, *gateway* is llmux's `/v1/` under daphne
  (one web process). The streaming time-to-first-chunk target is read as the gateway's
  *added* p99 (the engine alone already needs its 20 ms plus queueing).
- **Gateway as users run it**: `llmux serve --config` (the README's command) with one
  simulated engine (20 ms to the first token), 32 clients, against the engine directly, with
  API keys off and on (a real key checked on every request), in the embedded profile
  (SQLite) and the production one (PostgreSQL and Redis; scripts/bench_profiles.py), each
  row checked against the targets (keys off ≥ 75 % of direct requests/s, p99 added
  ≤ 50 ms, keys on within 10 % of keys off); `scripts/bench_serve.py`, which can also
  measure two checkouts in turns (`--tree NAME=DIR`).
- **Switch overhead**: time from sending a request for the sleeping model B (while A is
  active) to B's first byte (its first token: the simulator sends nothing of a stream
  before it, as vLLM), minus A's `/sleep?level=1` and B's `/wake_up` timed directly on
  engines of the same kind. It includes the readiness probe (one token, 20 ms) and the
  request's own first token (20 ms), which run at the same time since the early admission
  of 2026-11-29 (docs/SWITCHING.md), and every hand-off between the web process, the
  database and the worker. Runs before that date measured the first byte of a simulator
  that sent a stream's role event before its first token: their switch figures are
  about 20 ms lower than the same code would measure now.
- **Checkpoint**: CRIU dump and restore of a simulated engine (weights in CPU memory)
  against dd writing and reading as many bytes on the same disk, in a section of its own
  (`scripts/bench_checkpoint.py`) that says what each row includes.
- **Scheduling policies**: llmux's profiles under fifo, cost_aware and time_slice with
  simulated switch costs (`scripts/bench_policies.py`).
- **Real vLLM**: vLLM's CPU build (scripts/install-vllm.sh) with the tiny local model,
  two engines behind `llmux serve` evicted by `retain+checkpoint` with `keep_images`;
  every figure from llmux's own swap and image records of one run
  (`scripts/bench_real_vllm.py`).
- **Dashboard and API at scale**: server time of the overview, the swap history and the
  API's status and swaps with 100 models and 100,000 swap events, through Django's full
  request handling (`scripts/bench_dashboard.py`).
"""


# Sections kept as they stand when the report is written again: comparisons of a change
# with the commit before it (measured in one sitting, not repeatable from one tree) and
# runs on the GPU machine.
KEPT_SECTIONS = ("## A change against the commit before it", "## On the GPU machine")


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--before", help="also measure `llmux serve` of this commit, in turns with this tree"
    )
    args = parser.parse_args()
    gateway = run("bench_gateway.py", *(["--quick"] if args.quick else []))
    # The gateway as users run it: `llmux serve` from this checkout, keys off and on.
    served = run(
        "bench_serve.py",
        *(["--quick"] if args.quick else []),
        *(["--before", args.before] if args.before else []),
    )
    switches = run("bench_switch.py", "--switches", "10" if args.quick else "30")
    # Its own "## Checkpoint throughput (CRIU against dd)" section, with its own date.
    checkpoint = run("bench_checkpoint.py", *(["--quick"] if args.quick else []))
    # "## Dashboard pages and API at scale": 100 models, 100,000 swap events.
    dashboard = run("bench_dashboard.py", *(["--runs", "5"] if args.quick else []))
    policies = run("bench_policies.py")
    # Real vLLM (its CPU build): CRIU dump and restore against a cold start of the engine.
    real = run("bench_real_vllm.py", "--switches", "6" if args.quick else "8")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"{HEADER}\n## Run of {stamp}\n\n### Gateway\n\n{gateway}\n\n"
        f"### Gateway as users run it (`llmux serve`)\n\n{served}\n\n"
        f"### Switch orchestration overhead\n\n{switches}\n\n{checkpoint}\n\n"
        f"{dashboard}\n\n{policies}\n\n"
        f"## Real vLLM: CRIU checkpoints against a cold start\n\n{real}\n"
    )
    old = OUTPUT.read_text() if OUTPUT.exists() else ""
    kept = [old.index(heading) for heading in KEPT_SECTIONS if heading in old]
    if kept:
        text += "\n" + old[min(kept) :]
    OUTPUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
