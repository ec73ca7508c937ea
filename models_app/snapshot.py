"""The status snapshot: what the overview renders, the websocket sends, `/api/status/`
answers and the scrape-time gauges read, in one typed shape. Reads only: nothing here
inserts (a registry without its settings row reads as the defaults).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypedDict

from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from llmux_site.core.gpu import gpu_groups
from llmux_site.core.processes import process_trees
from models_app import image_port
from models_app.activity_selectors import ModelRate, model_rates
from models_app.models import (
    EngineRuntime,
    EngineState,
    ModelDefinition,
    RegistryConfig,
    SwapEvent,
    SwapOutcome,
    SwitchRequest,
    SwitchStatus,
)
from models_app.offered_actions import ModelFacts, blocked_actions
from models_app.selectors import gpu_group
from models_app.services.audit import outcome_of
from models_app.services.host_actions import capabilities_cached
from models_app.services.presence import group_demand, live_instances
from models_app.switch_progress import SwitchProgress, switches_in_progress
from models_app.telemetry import Telemetry, gpu_telemetry
from models_app.wiring import gpu_probe

PHASE_FIELDS = ("backoff", "cooldown", "drain", "evict", "bringup", "readiness")

# The switch in progress; functional form because `from` is a Python keyword.
SwitchInProgress = TypedDict(
    "SwitchInProgress",
    {
        "id": int,
        "from": str,
        "to": str,
        "trigger": str,
        "outcome": str,
        "phase": str,
        "bringup": str,
        "phases_ms": dict[str, float | None],
        "total_ms": float | None,
        "started_at": str,
        "error": str,
    },
)


class GpuMemory(TypedDict):
    """One GPU's memory, as the probe reads it."""

    id: int
    name: str
    used: int
    total: int


class CheckpointProgress(TypedDict):
    """The image being written, in bytes."""

    model: str
    done: int
    total: int


class ModelStatus(TypedDict):
    """One model's row of the overview."""

    name: str
    state: str
    state_label: str
    eviction: str
    gpu_ids: list[int]
    in_flight: int
    queued: int
    pid: int | None
    gpu_memory: int | None
    uptime_s: float | None
    last_switch: str | None
    last_switch_ms: float | None
    error: str  # the end of the last error (a log tail's cause is at its end)
    group: str
    serving: bool  # running: requests for it are answered now
    pinned: bool
    blocked: dict[str, str]  # operator actions that cannot apply now, and why


class GroupStatus(TypedDict):
    """One GPU group: its GPUs, its models, those serving now."""

    group: str
    gpu_ids: list[int]
    models: list[str]
    serving: list[str]
    switching: bool


class OperationStatus(TypedDict):
    """A lifecycle operation, open or ended lately: how the page closes an action's loop."""

    id: int
    kind: str
    target: str
    trigger: str
    actor: str
    status: str  # pending, running, succeeded, failed, skipped
    result: str  # the audit result it ends with ("" while open)
    detail: str  # what happened ("" while open)
    created_at: str
    finished_at: str | None


class StatusSnapshot(TypedDict):
    """Everything the overview shows, as JSON-able data."""

    at: str
    mode: str
    pinned: str | None
    models: list[ModelStatus]
    switch: SwitchInProgress | None
    # The newest swap's id: with `switch`, how the history and charts pages tell that the
    # swap history changed (and fetch it again) without reading it on every snapshot.
    last_swap: int | None
    gpus: list[GpuMemory]
    checkpoint: CheckpointProgress | None
    groups: list[GroupStatus]
    switches: list[SwitchProgress]
    operations: list[OperationStatus]
    criu: bool  # this host can take CRIU checkpoints
    rates: dict[str, ModelRate]  # requests/s and tokens/s per model, over the last minute
    telemetry: Telemetry


class ApiStatus(StatusSnapshot):
    """`/api/status/` (llmux's /control/status): the snapshot and the running models."""

    active: list[str]


def _switch(swap: SwapEvent | None) -> SwitchInProgress | None:
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
        "error": error_end(swap.error, 500),
    }


def _gpus() -> list[GpuMemory]:
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


def _checkpoint() -> CheckpointProgress | None:
    dump = image_port.dump_in_progress()
    if dump is None:
        return None
    return {"model": dump.model_name, "done": dump.done, "total": dump.total}


def _models() -> list[ModelDefinition]:
    """Every model with its runtime row and its last switch's start and duration."""
    latest = SwapEvent.objects.filter(to_model=OuterRef("pk")).order_by("-started_at", "-id")
    return list(
        ModelDefinition.objects.select_related("runtime")
        .annotate(
            last_switch=Subquery(latest.values("started_at")[:1]),
            last_switch_ms=Subquery(latest.values("total_ms")[:1]),
        )
        .order_by("name")
    )


def _runtime(model: ModelDefinition) -> EngineRuntime | None:
    return getattr(model, "runtime", None)


def _memory(models: list[ModelDefinition]) -> dict[int, int | None]:
    """GPU memory by engine pid, for the engines with a live process."""
    live = [
        (runtime.pid, runtime.pgid or 0)
        for m in models
        if (runtime := _runtime(m)) is not None
        and runtime.pid is not None
        and runtime.state in EngineState.with_process()
    ]
    return _engine_memory(live) if live else {}


RECENT_OPERATIONS = timedelta(minutes=10)  # ended operations the page still hears of
MAX_OPERATIONS = 50


class _Rows:
    """What each model's row needs beyond the model: read once for all of them."""

    def __init__(self, models: list[ModelDefinition], config: RegistryConfig) -> None:
        self.demand = group_demand([m.name for m in models], live_instances())
        self.memory = _memory(models)
        self.default = config.default_eviction()
        self.now = timezone.now()
        self.pinned = config.pinned_model.name if config.pinned_model else None
        self.criu = capabilities_cached()[1]
        self.restorable = image_port.restorable(models)
        self.groups = _placed(models)

    def row(self, model: ModelDefinition) -> ModelStatus:
        runtime = _runtime(model)
        state = runtime.state if runtime else EngineState.NOT_STARTED.value
        demand = self.demand[model.name]
        running = runtime is not None and state == EngineState.RUNNING
        activated = runtime.activated_at if runtime is not None and running else None
        last_switch: datetime | None = model.last_switch  # type: ignore[attr-defined]
        facts = ModelFacts(
            model.name, state, self.pinned == model.name, model.name in self.restorable, self.criu
        )
        return {
            "name": model.name,
            "state": state,
            "state_label": EngineState(state).label,
            "eviction": (model.eviction_override() or self.default).label,
            "gpu_ids": list(model.gpu_ids),
            "in_flight": demand.in_flight,
            "queued": demand.waiting,
            "pid": runtime.pid if runtime else None,
            "gpu_memory": self.memory.get(runtime.pid) if runtime and runtime.pid else None,
            "uptime_s": (self.now - activated).total_seconds() if activated else None,
            "last_switch": last_switch.isoformat() if last_switch else None,
            "last_switch_ms": model.last_switch_ms,  # type: ignore[attr-defined]
            "error": error_end(runtime.last_error) if runtime else "",
            "group": self.groups[model.name],
            "serving": running,
            "pinned": facts.pinned,
            "blocked": blocked_actions(facts),
        }


ERROR_CHARS = 300


def error_end(text: str, chars: int = ERROR_CHARS) -> str:
    """The end of an error: where a failure's cause is (an engine log tail ends with it)."""
    return text.strip()[-chars:]


def _placed(models: list[ModelDefinition]) -> dict[str, str]:
    """Each model's GPU group, as switches compute it (selectors.gpu_group: among the
    enabled models, a disabled one placed as if it were enabled), from one grouping."""
    enabled = {m.name: list(m.gpu_ids) for m in models if m.enabled}
    groups = gpu_groups(enabled)
    return {m.name: groups.get(m.name) or gpu_group(m, enabled) for m in models}


def _groups(rows: list[ModelStatus], switches: list[SwitchProgress]) -> list[GroupStatus]:
    """Models by GPU group, with those serving now."""
    groups: dict[str, GroupStatus] = {}
    for row in rows:
        key = row["group"]
        group = groups.setdefault(
            key, {"group": key, "gpu_ids": [], "models": [], "serving": [], "switching": False}
        )
        group["gpu_ids"] = sorted(set(group["gpu_ids"]) | set(row["gpu_ids"]))
        group["models"].append(row["name"])
        if row["serving"]:
            group["serving"].append(row["name"])
    busy = {switch["group"] for switch in switches}
    for key, group in groups.items():
        group["switching"] = key in busy
    return sorted(groups.values(), key=lambda g: (g["gpu_ids"], g["group"]))


def _operations(now: datetime) -> list[OperationStatus]:
    """Open operations and those that ended in the last RECENT_OPERATIONS, newest first."""
    recent = SwitchRequest.objects.filter(
        Q(status__in=[SwitchStatus.PENDING, SwitchStatus.RUNNING])
        | Q(finished_at__gte=now - RECENT_OPERATIONS)
    )
    shown: list[OperationStatus] = []
    for request in recent.select_related("target", "swap").order_by("-id")[:MAX_OPERATIONS]:
        ended = request.finished_at is not None
        result, detail = outcome_of(request) if ended else ("", "")
        shown.append(
            {
                "id": request.pk,
                "kind": request.kind,
                "target": request.target.name,
                "trigger": request.trigger,
                "actor": request.actor,
                "status": request.status,
                "result": result,
                "detail": detail,
                "created_at": request.created_at.isoformat(),
                "finished_at": request.finished_at.isoformat() if request.finished_at else None,
            }
        )
    return shown


def status_snapshot() -> StatusSnapshot:
    """Everything the overview shows, read now."""
    config = RegistryConfig.current()
    models = _models()
    rows = _Rows(models, config)
    current = SwapEvent.objects.filter(outcome=SwapOutcome.IN_PROGRESS).order_by("-id").first()
    runtimes = {m.name: r for m in models if (r := _runtime(m)) is not None}
    switches = switches_in_progress(rows.now, config, runtimes, rows.demand)
    model_rows = [rows.row(model) for model in models]
    return {
        "at": rows.now.isoformat(),
        "mode": config.mode,
        "pinned": rows.pinned,
        "models": model_rows,
        "switch": _switch(current),
        "last_swap": SwapEvent.objects.order_by("-id").values_list("id", flat=True).first(),
        "gpus": _gpus(),
        "checkpoint": _checkpoint(),
        "groups": _groups(model_rows, switches),
        "switches": switches,
        "operations": _operations(rows.now),
        "criu": rows.criu,
        "rates": model_rates(),
        "telemetry": gpu_telemetry(models),
    }


def api_status() -> ApiStatus:
    """`/api/status/`: the snapshot, and the names of the running models last."""
    state = status_snapshot()
    active = [m["name"] for m in state["models"] if m["state"] == EngineState.RUNNING]
    return {**state, "active": active}
