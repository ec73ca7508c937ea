"""The status snapshot the overview renders and the websocket sends (one shape for both)."""

from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from checkpoints_app.models import CheckpointImage, ImageStatus
from llmux_site.core.processes import process_trees
from models_app.models import (
    EngineState,
    ModelDefinition,
    RegistryConfig,
    SwapEvent,
    SwapOutcome,
)
from models_app.services.presence import group_demand, live_instances
from models_app.services.switch_ports import gpu_probe

PHASE_FIELDS = ("backoff", "cooldown", "drain", "evict", "bringup", "readiness")


def _swap(swap: SwapEvent | None) -> dict[str, Any] | None:
    if swap is None:
        return None
    return {
        "id": swap.pk,
        "from": swap.from_name,
        "to": swap.to_name,
        "trigger": swap.trigger,
        "outcome": swap.outcome,
        "phase": swap.phase,
        "bringup": swap.bringup,
        "phases_ms": {p: getattr(swap, f"{p}_ms") for p in PHASE_FIELDS},
        "total_ms": swap.total_ms,
        "started_at": swap.started_at.isoformat(),
        "error": swap.error[:500],
    }


def _gpus() -> list[dict[str, Any]]:
    try:
        return [
            {"id": g.id, "name": g.name, "used": g.used_bytes, "total": g.total_bytes}
            for g in gpu_probe().devices()
        ]
    except Exception:  # a probe error must not break the page
        return []


def _engine_memory(roots: list[tuple[int, int]]) -> dict[int, int | None]:
    """GPU bytes held by each engine's tree (vLLM keeps weights in child processes), from
    one scan of /proc for all of them."""
    try:
        probe = gpu_probe()
        return {pid: probe.used_by_pids(tree) for pid, tree in process_trees(roots).items()}
    except Exception:  # a probe error must not break the page
        return {}


def snapshot() -> dict[str, Any]:
    """Everything the overview shows, as plain JSON-able data."""
    config = RegistryConfig.load()
    default = config.default_eviction()
    latest = SwapEvent.objects.filter(to_model=OuterRef("pk")).order_by("-started_at", "-id")
    models = list(
        ModelDefinition.objects.select_related("runtime")
        .annotate(
            last_switch=Subquery(latest.values("started_at")[:1]),
            last_switch_ms=Subquery(latest.values("total_ms")[:1]),
        )
        .order_by("name")
    )
    names = [m.name for m in models]
    demand = group_demand(names, live_instances())
    live = [
        (m.runtime.pid, m.runtime.pgid or 0)
        for m in models
        if getattr(m, "runtime", None) is not None
        and m.runtime.pid is not None
        and m.runtime.state in EngineState.with_process()
    ]
    memory = _engine_memory(live) if live else {}
    now = timezone.now()
    rows = []
    for model in models:
        runtime = getattr(model, "runtime", None)
        state = runtime.state if runtime else EngineState.NOT_STARTED.value
        waiting, _, in_flight = demand[model.name]
        activated = runtime.activated_at if runtime and state == EngineState.RUNNING else None
        rows.append(
            {
                "name": model.name,
                "state": state,
                "state_label": EngineState(state).label,
                "eviction": (model.eviction_override() or default).label,
                "gpu_ids": list(model.gpu_ids),
                "in_flight": in_flight,
                "queued": waiting,
                "pid": runtime.pid if runtime else None,
                "gpu_memory": memory.get(runtime.pid) if runtime and runtime.pid else None,
                "uptime_s": (now - activated).total_seconds() if activated else None,
                "last_switch": model.last_switch.isoformat() if model.last_switch else None,
                "last_switch_ms": model.last_switch_ms,
                "error": (runtime.last_error[:300] if runtime else ""),
            }
        )
    current = SwapEvent.objects.filter(outcome=SwapOutcome.IN_PROGRESS).order_by("-id").first()
    images = CheckpointImage.objects.filter(status=ImageStatus.WRITING).order_by("-id").first()
    return {
        "at": now.isoformat(),
        "mode": config.mode,
        "pinned": config.pinned_model.name if config.pinned_model else None,
        "models": rows,
        "switch": _swap(current),
        "gpus": _gpus(),
        "checkpoint": None
        if images is None
        else {
            "model": images.model_name,
            "done": images.progress_bytes,
            "total": images.progress_total,
        },
    }
