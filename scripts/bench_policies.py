#!/usr/bin/env python3
"""llmux's scheduling benchmark profiles under fifo, cost_aware and time_slice.

    .venv/bin/python scripts/bench_policies.py [--switch-cost 10 --switch-cost 20]

The policies are the real `scheduling.decide`, run by the discrete-event simulator
(`llmux_site.core.scheduling_sim`) with simulated switch costs; one run, all profiles and
policies side by side. Prints a markdown section for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmux_site.core.scheduling import PolicyConfig
from llmux_site.core.scheduling_sim import SimResult, benchmark

# llmux's own policy benchmark runs without the min-active cooldown (with llmux's default
# 5 s cooldown fifo already gets slices, and the two tie on `dominant`).
LLMUX_BENCH = PolicyConfig(min_active_secs=0)

WINNING = ("balanced", "dominant")  # where time_slice must beat fifo's serving fraction


def table(results: list[SimResult]) -> list[str]:
    lines = [
        "| profile | policy | requests | switches | switch time (s) | GPU serving | avg wait (s) "
        "| max wait (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.profile} | {r.policy} | {r.requests} | {r.switches} | {r.switch_time:.1f} "
            f"| {r.gpu_serving_fraction:.1%} | {r.avg_wait:.1f} | {r.max_wait:.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switch-cost", type=float, action="append")
    parser.add_argument("--service-time", type=float, default=0.5)
    args = parser.parse_args()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "## Scheduling policies (simulated switch costs)",
        "",
        f"Run of {stamp}: llmux's profiles through `llmux_site.core.scheduling_sim` (the real "
        f"policy code), service {args.service_time:g} s per request, llmux's benchmark "
        "settings (min_active_secs 0). GPU serving = 1 - switch time / busy time.",
    ]
    verdicts = []
    for cost in args.switch_cost or [10.0, 20.0]:
        results = benchmark(switch_cost=cost, service_time=args.service_time, base=LLMUX_BENCH)
        out += ["", f"### Switch cost {cost:g} s", "", *table(results)]
        by = {(r.profile, r.policy): r for r in results}
        for profile in WINNING:
            ts, fifo = by[profile, "time_slice"], by[profile, "fifo"]
            won = ts.gpu_serving_fraction > fifo.gpu_serving_fraction
            verdicts.append(won)
            out.append(
                f"\n{profile}: time_slice {ts.gpu_serving_fraction:.1%} vs fifo "
                f"{fifo.gpu_serving_fraction:.1%} {'✓' if won else '✗'}"
            )
    out += ["", f"time_slice beats fifo on {', '.join(WINNING)}: {'✓' if all(verdicts) else '✗'}"]
    print("\n".join(out))


if __name__ == "__main__":
    main()
