#!/usr/bin/env python3
"""Server time of the dashboard's overview, swap history and charts with 100 models and
100,000 swap events (the dashboard issue's scale target: each under 300 ms).

    .venv/bin/python scripts/bench_dashboard.py [--models 100] [--swaps 100000] [--runs 20]

Runs against a fresh embedded (SQLite) database in a temporary data directory, through
Django's full request handling (middleware, session login, templates), in one process:
the time is the server's, without a network or a browser. Prints a markdown section.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_MS = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--swaps", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="llmux-bench-dash-")
    os.environ["LLMUX_DATA_DIR"] = data
    os.environ["DJANGO_SETTINGS_MODULE"] = "llmux_site.settings"
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    fill(args.models, args.swaps)
    figures = measure(args.runs)
    print(report(args, figures))


PASSWORD = secrets.token_urlsafe(16)


def fill(models: int, swaps: int) -> None:
    from django.contrib.auth.models import User

    from models_app.models import EngineRuntime, ModelDefinition, SwapEvent

    User.objects.create_superuser("bench", password=PASSWORD)
    defs = ModelDefinition.objects.bulk_create(
        ModelDefinition(name=f"model-{i:03d}", model_path=f"sim/m{i}", port=20000 + i)
        for i in range(models)
    )
    EngineRuntime.objects.bulk_create(
        EngineRuntime(
            model=m,
            state="running" if i == 0 else "sleeping",
            pid=100_000 + i,  # not a live process: the pages only read the records
            create_time=1.0,
            pgid=100_000 + i,
        )
        for i, m in enumerate(defs)
    )
    batch = []
    for i in range(swaps):
        to, frm = defs[i % models], defs[(i + 1) % models]
        batch.append(
            SwapEvent(
                gpu_group="gpu0",
                from_model=frm,
                to_model=to,
                from_name=frm.name,
                to_name=to.name,
                trigger="request" if i % 7 else "dashboard",
                actor="" if i % 7 else "bench",
                outcome="succeeded" if i % 20 else "failed",
                error="" if i % 20 else "bring-up failed; the engine's log says:\n" + "x" * 8000,
                eviction_weights="offload",
                eviction_process="keep_running",
                bringup="wake",
                queue_ms=5.0,
                backoff_ms=0.0,
                check_ms=1.0,
                cooldown_ms=0.0,
                drain_ms=3.0,
                evict_ms=40.0,
                bringup_ms=900.0,
                readiness_ms=25.0,
                settle_ms=2.0,
                total_ms=975.0,
                finished_at=datetime(2026, 1, 1, tzinfo=UTC),  # set below with started_at
                gpu_memory_after={"0": 40 << 30},
            )
        )
        if len(batch) == 5000:
            SwapEvent.objects.bulk_create(batch)
            batch = []
    SwapEvent.objects.bulk_create(batch)
    # started_at is auto_now_add: spread it over the history as a real one would be, one
    # swap every 30 s up to now (so the charts' windows, which end now, are full).
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE models_app_swapevent SET started_at = datetime('now', "
            "'-' || ((%s - id) * 30) || ' seconds')",
            [swaps],
        )
        cursor.execute(
            "UPDATE models_app_swapevent SET finished_at = datetime(started_at, '+1 seconds')"
        )
    switching(defs[0], defs[1])


def switching(outgoing: object, incoming: object) -> None:
    """A switch in progress (its panel reads the target's history for the estimate) and
    one operation queued behind it, as an operator looking at a busy host would see."""
    from django.utils import timezone

    from models_app.models import SwapEvent, SwitchRequest

    swap = SwapEvent.objects.create(
        gpu_group="gpu0",
        from_model=outgoing,
        to_model=incoming,
        from_name=outgoing.name,  # type: ignore[attr-defined]
        to_name=incoming.name,  # type: ignore[attr-defined]
        trigger="request",
        phase="bringup",
        phase_started_at=timezone.now(),
        drain_ms=3.0,
        evict_ms=40.0,
    )
    SwitchRequest.objects.create(
        group="gpu0", target=incoming, trigger="request", status="running", swap=swap
    )
    SwitchRequest.objects.create(group="gpu0", target=outgoing, trigger="dashboard")


def measure(runs: int) -> dict[str, list[float]]:
    from django.test import Client

    client = Client(HTTP_HOST="127.0.0.1", HTTP_ACCEPT_ENCODING="gzip, deflate, br")  # a browser's
    assert client.login(username="bench", password=PASSWORD)
    pages = {
        "overview": "/",
        "model page": "/models/model-001/",
        "requests": "/requests/",
        "checkpoints": "/checkpoints/",
        "charts": "/charts/",
        "charts data, 24 h": "/charts/data/",
        "charts data, 7 days (5,000 drawn)": "/charts/data/?hours=168",
        "audit": "/audit/",
        "keys": "/keys/",
        "playground": "/playground/",
        "swap history, page 1": "/swaps/",
        "swap history, page 1000": "/swaps/?page=1000",
        "swap history, one model, failed": "/swaps/?model=model-007&outcome=failed",
        "swap history, live rows": "/swaps/rows/",
        "API status": "/api/status/",
        "API swaps, newest 50": "/api/swaps/?limit=50",
        "API swaps, one model, failed": "/api/swaps/?model=model-007&outcome=failed&limit=50",
    }
    figures: dict[str, list[float]] = {}
    for name, url in pages.items():
        client.get(url)  # warm caches and templates once
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        figures[name] = times
    return figures


def report(args: argparse.Namespace, figures: dict[str, list[float]]) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    lines = [
        "## Dashboard pages and API at scale",
        "",
        f"Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs ({cpu}), Python "
        f"{platform.python_version()}, embedded profile (SQLite). {args.models} models, "
        f"{args.swaps:,} swap events; server time through Django's full request handling "
        f"(session, middleware, template), {args.runs} requests each after one warm-up.",
        "",
        "| page | p50 (ms) | p90 (ms) | max (ms) | target |",
        "|---|---:|---:|---:|---|",
    ]
    for name, times in figures.items():
        ordered = sorted(times)
        p50 = statistics.median(ordered)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        mark = "✓" if p50 < TARGET_MS else "✗"
        lines.append(
            f"| {name} | {p50:.1f} | {p90:.1f} | {ordered[-1]:.1f} | < {TARGET_MS:.0f} {mark} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
