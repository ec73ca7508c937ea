"""Data for the dashboard's charts, from the swap history (bounded: a window, a cap).

Each model has one colour, the same in every chart (`colours`); the window is always
given, so an empty one is drawn as that window, not as plotly's default year 2000.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, tzinfo
from typing import Any, TypedDict

from django.utils import timezone

from models_app.models import (
    BringUp,
    EngineRuntime,
    ModelDefinition,
    SwapEvent,
    SwapOutcome,
)

MAX_SWAPS = 5000
# plotly's own first ten (D3's category10): the first models get the colours people know.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
GOLDEN_ANGLE = 137.508  # degrees: each further hue as far from the others as it can be
FIELDS = (
    "gpu_group",
    "from_name",
    "to_name",
    "outcome",
    "bringup",
    "started_at",
    "finished_at",
    "total_ms",
    "gpu_memory_after",
)


class Holds(TypedDict):
    """One model's bars: it held GPU group `group[i]` from `start[i]` to `end[i]`
    (columns, not a list of objects: a long window has thousands)."""

    model: str
    group: list[str]
    start: list[str]
    end: list[str]


class Latency(TypedDict):
    """Switch totals (ms) to one model brought up one way."""

    model: str
    bringup: str
    label: str
    values: list[float]


class MemorySeries(TypedDict):
    """One GPU's memory in use (bytes) after each swap, and who then held it ("": nobody)."""

    at: list[str]
    used: list[int]
    model: list[str]


def chart_data(hours: float = 24.0) -> dict[str, Any]:
    """Timeline segments, switch latencies per target and bring-up, GPU memory over time."""
    now = timezone.localtime()  # times go out in the site's zone (see `_iso`)
    since = now - timedelta(hours=hours)
    window = SwapEvent.objects.filter(started_at__gte=since).order_by("-started_at", "-id")
    in_window = window.count()
    swaps = list(window.values(*FIELDS)[:MAX_SWAPS])
    swaps.reverse()  # oldest first
    # Past the cap, the charts begin at the oldest swap drawn, and the page says so.
    drawn_from = swaps[0]["started_at"] if in_window > len(swaps) else since
    zone = now.tzinfo
    timeline = _timeline(swaps, _holders_at(drawn_from, swaps), drawn_from, now)
    latency = _latency(swaps)
    memory = _memory(swaps, zone)
    names = {holds["model"] for holds in timeline} | {entry["model"] for entry in latency}
    return {
        "since": _iso(since, zone),
        "until": _iso(now, zone),
        "swaps": in_window,
        "drawn": len(swaps),
        "drawn_from": _iso(drawn_from, zone),
        "timeline": timeline,
        "latency": latency,
        "memory": memory,
        "colours": colours(names),
    }


def colours(names: Iterable[str]) -> dict[str, str]:
    """One colour per model, by its place among the registry's models (and any that were
    deleted since), so a model has the same colour in every chart and on every load."""
    everyone = sorted(set(ModelDefinition.objects.values_list("name", flat=True)) | set(names))
    return {name: colour(index) for index, name in enumerate(everyone)}


def colour(index: int) -> str:
    if index < len(PALETTE):
        return PALETTE[index]
    return f"hsl({(index * GOLDEN_ANGLE) % 360:.0f}, 60%, 45%)"


def _holders_at(start: datetime, swaps: list[dict[str, Any]]) -> dict[str, str]:
    """Who held each GPU group at `start`: the outcome of its last swap before it."""
    holders: dict[str, str] = {}
    groups = {s["gpu_group"] for s in swaps} | set(
        EngineRuntime.objects.values_list("gpu_group", flat=True).distinct()
    )
    for group in groups - {""}:
        last = (
            SwapEvent.objects.filter(gpu_group=group, started_at__lt=start)
            .exclude(outcome=SwapOutcome.IN_PROGRESS)
            .order_by("-started_at", "-id")
            .values("outcome", "to_name")
            .first()
        )
        if last is not None and last["outcome"] == SwapOutcome.SUCCEEDED and last["to_name"]:
            holders[group] = last["to_name"]
    return holders


def _timeline(
    swaps: list[dict[str, Any]], holders: dict[str, str], start: datetime, now: datetime
) -> list[Holds]:
    """Who held each group when: a swap ends its group's holder at its start; a succeeded
    switch makes its target the holder from its end (the gap between is the switch)."""
    bars: dict[str, Holds] = {}
    held: dict[str, tuple[str, datetime]] = {g: (m, start) for g, m in holders.items()}
    zone = now.tzinfo

    def hold(group: str, until: datetime) -> None:
        model, since = held.pop(group)
        holds = bars.setdefault(model, {"model": model, "group": [], "start": [], "end": []})
        holds["group"].append(group)
        holds["start"].append(_iso(since, zone))
        holds["end"].append(_iso(until, zone))

    for swap in swaps:
        group = swap["gpu_group"]
        if group in held:
            hold(group, swap["started_at"])
        if swap["outcome"] == SwapOutcome.SUCCEEDED and swap["to_name"]:
            held[group] = (swap["to_name"], swap["finished_at"])
    for group in list(held):
        hold(group, now)
    return [bars[model] for model in sorted(bars)]


def _latency(swaps: list[dict[str, Any]]) -> list[Latency]:
    """Totals of succeeded switches by target and how it came up (wake, restore, ...):
    what a switch to a model costs depends on both."""
    groups: dict[tuple[str, str], list[float]] = {}
    for swap in swaps:
        if swap["outcome"] == SwapOutcome.SUCCEEDED and swap["to_name"] and swap["total_ms"]:
            key = (swap["to_name"], swap["bringup"] or "")
            groups.setdefault(key, []).append(round(swap["total_ms"], 1))
    return [
        {"model": model, "bringup": bringup, "label": _latency_label(model, bringup), "values": v}
        for (model, bringup), v in sorted(groups.items())
    ]


def _latency_label(model: str, bringup: str) -> str:
    how = BringUp(bringup).label.lower() if bringup in BringUp.values and bringup else "—"
    return f"{model} · {how}"


def _memory(swaps: list[dict[str, Any]], zone: tzinfo | None) -> dict[str, MemorySeries]:
    """GPU memory in use after each swap, per GPU, with the model then holding it."""
    memory: dict[str, MemorySeries] = {}
    for swap in swaps:
        at = _iso(swap["finished_at"] or swap["started_at"], zone)
        holder = swap["to_name"] if swap["outcome"] == SwapOutcome.SUCCEEDED else ""
        for gpu, used in (swap["gpu_memory_after"] or {}).items():
            series = memory.setdefault(str(gpu), {"at": [], "used": [], "model": []})
            series["at"].append(at)
            series["used"].append(int(used))
            series["model"].append(holder)
    return memory


def _iso(moment: datetime, zone: tzinfo | None) -> str:
    """In the site's time zone, as the history page shows times: plotly.js draws a time as
    written, ignoring its offset. (The zone is looked up once by the caller: looking it up
    for each of the thousands of times of a long window took most of its time.)"""
    return moment.astimezone(zone).isoformat()
