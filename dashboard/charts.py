"""Data for the dashboard's charts, from the swap history (bounded: a window, a cap)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from models_app.models import SwapEvent, SwapOutcome

MAX_SWAPS = 5000


def chart_data(hours: float = 24.0) -> dict[str, Any]:
    """Timeline segments, switch latencies per model and policy, GPU memory over time."""
    since = timezone.now() - timedelta(hours=hours)
    swaps = list(
        SwapEvent.objects.filter(started_at__gte=since)
        .exclude(outcome=SwapOutcome.IN_PROGRESS)
        .order_by("-started_at", "-id")
        .values(
            "gpu_group",
            "from_name",
            "to_name",
            "outcome",
            "started_at",
            "finished_at",
            "total_ms",
            "eviction_weights",
            "eviction_process",
            "gpu_memory_after",
        )[:MAX_SWAPS]
    )
    swaps.reverse()  # oldest first
    now = timezone.now()
    timeline: list[dict[str, Any]] = []
    held: dict[str, tuple[str, Any]] = {}  # group -> (model, since)
    latencies: dict[str, list[float]] = {}
    memory: dict[str, list[tuple[str, int]]] = {}
    for swap in swaps:
        group = swap["gpu_group"]
        if group in held:  # the previous holder held it until this switch began
            model, start = held.pop(group)
            timeline.append(_segment(group, model, start, swap["started_at"]))
        if swap["outcome"] == SwapOutcome.SUCCEEDED and swap["to_name"]:
            held[group] = (swap["to_name"], swap["finished_at"])
            policy = "+".join(p for p in (swap["eviction_weights"], swap["eviction_process"]) if p)
            key = f"{swap['to_name']} · {policy or 'cold'}"
            if swap["total_ms"] is not None:
                latencies.setdefault(key, []).append(round(swap["total_ms"], 1))
        finished = swap["finished_at"] or swap["started_at"]
        for gpu, used in (swap["gpu_memory_after"] or {}).items():
            memory.setdefault(str(gpu), []).append((finished.isoformat(), int(used)))
    for group, (model, start) in held.items():
        timeline.append(_segment(group, model, start, now))
    return {
        "since": since.isoformat(),
        "timeline": timeline,
        "latency_ms": latencies,
        "memory": memory,
    }


def _segment(group: str, model: str, start: Any, end: Any) -> dict[str, Any]:
    return {"group": group, "model": model, "start": start.isoformat(), "end": end.isoformat()}
