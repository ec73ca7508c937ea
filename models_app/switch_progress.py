"""The switches in progress, as the dashboard's switch panel and `/api/status/` show them.

Per running operation: every phase with its state (done, now, skipped, to do) and its
duration, when the current phase began and, for the waits with a known end (backoff after a
failure, cooldown of the outgoing model), when it ends; an estimate of the time left from
the target's past switches; the requests waiting for the target; the restore's bytes; and
the operation queued next on the group. Reads only.

Before the worker opens the swap row (it does after the first engine write, or once a phase
lasts) the operation is shown from its queue row: in backoff, with its end, when the group
failed less than the backoff ago, else starting.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TypedDict

from models_app import image_port
from models_app.models import (
    EngineRuntime,
    EngineState,
    GroupLease,
    OperationKind,
    RegistryConfig,
    SwapEvent,
    SwapOutcome,
    SwitchRequest,
    SwitchStatus,
)
from models_app.services.planning import FAILURE_BACKOFF
from models_app.services.presence import Demand

PHASES = ("backoff", "cooldown", "drain", "evict", "bringup", "readiness")
WAITS = ("backoff", "cooldown")  # phases that only wait for a known moment
WORK = ("drain", "evict", "bringup", "readiness")
OUTGOING_ONLY = ("cooldown", "drain", "evict")
INCOMING_ONLY = ("bringup", "readiness")
ESTIMATE_FROM = 20  # the target's last successful switches an estimate is taken from
NO_WAIT_MS = 1.0  # a wait phase shorter than this did not wait: shown as skipped


class PhaseProgress(TypedDict):
    name: str
    state: str  # done, now, skipped, todo
    ms: float | None


class QueuedNext(TypedDict):
    operation: int
    target: str
    kind: str
    trigger: str


class Transfer(TypedDict):
    done: int
    total: int


SwitchProgress = TypedDict(
    "SwitchProgress",
    {
        "operation": int,
        "swap": int | None,
        "group": str,
        "kind": str,  # switch or evict
        "from": str,
        "to": str,
        "trigger": str,
        "actor": str,
        "phase": str,  # a PHASES name, or "starting" before the first
        "phases": list[PhaseProgress],
        "started_at": str,
        "phase_started_at": str | None,
        "phase_ends_at": str | None,  # a wait with a known end (countdown)
        "remaining_ms": float | None,  # estimated; None without history
        "estimate_from": int,  # how many past switches the estimate is taken from
        "waiting": int,
        "restore": Transfer | None,
        "next": QueuedNext | None,
    },
)


class _Context:
    """What every running operation's progress reads, read once."""

    def __init__(
        self,
        now: datetime,
        config: RegistryConfig,
        runtimes: Mapping[str, EngineRuntime],
        demand: Mapping[str, Demand],
    ) -> None:
        self.now = now
        self.config = config
        self.runtimes = runtimes
        self.demand = demand
        self.pending = list(
            SwitchRequest.objects.filter(status=SwitchStatus.PENDING)
            .select_related("target")
            .order_by("created_at", "id")
        )
        self.restore = image_port.restore_in_progress()


def switches_in_progress(
    now: datetime,
    config: RegistryConfig,
    runtimes: Mapping[str, EngineRuntime],
    demand: Mapping[str, Demand],
) -> list[SwitchProgress]:
    """Every running operation's progress, by GPU group. `runtimes` by model name."""
    running = list(
        SwitchRequest.objects.filter(status=SwitchStatus.RUNNING)
        .select_related("target", "swap")
        .order_by("group", "id")
    )
    if not running:
        return []
    context = _Context(now, config, runtimes, demand)
    failures = dict(
        GroupLease.objects.filter(group__in=[r.group for r in running]).values_list(
            "group", "last_failure_at"
        )
    )
    return [_progress(request, context, failures.get(request.group)) for request in running]


def _sides(request: SwitchRequest, context: _Context) -> tuple[str, str]:
    """(outgoing, incoming) model names of the operation ("" where there is none)."""
    target = request.target.name
    if request.kind == OperationKind.EVICT:
        return target, ""
    swap = request.swap
    if swap is not None:
        return swap.from_name, target
    awake = [
        name
        for name, runtime in context.runtimes.items()
        if name != target
        and runtime.gpu_group == request.group
        and runtime.state == EngineState.RUNNING
    ]
    return (awake[0] if awake else ""), target


def _progress(
    request: SwitchRequest, context: _Context, failed_at: datetime | None
) -> SwitchProgress:
    swap = request.swap
    outgoing, incoming = _sides(request, context)
    phase, since, ends = _current(request, context, outgoing, failed_at)
    phases = _phases(swap, phase, request, outgoing, context.config)
    history = _history(request)
    restore = context.restore
    return {
        "operation": request.pk,
        "swap": swap.pk if swap else None,
        "group": request.group,
        "kind": request.kind,
        "from": outgoing,
        "to": incoming,
        "trigger": request.trigger,
        "actor": request.actor,
        "phase": phase,
        "phases": phases,
        "started_at": (swap.started_at if swap else request.created_at).isoformat(),
        "phase_started_at": since.isoformat() if since else None,
        "phase_ends_at": ends.isoformat() if ends else None,
        "remaining_ms": _remaining(history, phases, phase, since, ends, context.now),
        "estimate_from": len(history),
        "waiting": context.demand[incoming].waiting if incoming in context.demand else 0,
        "restore": (
            {"done": restore.done, "total": restore.total}
            if restore and restore.model_name == incoming
            else None
        ),
        "next": _next(request.group, context),
    }


def _current(
    request: SwitchRequest, context: _Context, outgoing: str, failed_at: datetime | None
) -> tuple[str, datetime | None, datetime | None]:
    """(phase, when it began, when it ends where that is known)."""
    swap = request.swap
    if swap is None or not swap.phase:
        backoff_end = failed_at + FAILURE_BACKOFF if failed_at else None
        if backoff_end is not None and backoff_end > context.now:
            return "backoff", failed_at, backoff_end
        return "starting", request.created_at, None
    ends = None
    if swap.phase == "cooldown":
        runtime = context.runtimes.get(outgoing)
        activated = runtime.activated_at if runtime is not None else None
        if activated is not None:
            ends = activated + timedelta(seconds=context.config.min_active_secs)
    return swap.phase, swap.phase_started_at, ends


def _applies(name: str, request: SwitchRequest, outgoing: str, config: RegistryConfig) -> bool:
    if name in OUTGOING_ONLY and not outgoing:
        return False
    if name == "cooldown" and (request.force or config.min_active_secs <= 0):
        return False
    return not (name in INCOMING_ONLY and request.kind == OperationKind.EVICT)


def _phases(
    swap: SwapEvent | None,
    current: str,
    request: SwitchRequest,
    outgoing: str,
    config: RegistryConfig,
) -> list[PhaseProgress]:
    at = PHASES.index(current) if current in PHASES else -1
    shown: list[PhaseProgress] = []
    for index, name in enumerate(PHASES):
        ms: float | None = getattr(swap, f"{name}_ms") if swap is not None else None
        if name == current:
            state = "now"
        elif name in WAITS and ms is not None and ms < NO_WAIT_MS:
            state = "skipped"
        elif ms is not None:
            state = "done"
        elif not _applies(name, request, outgoing, config) or index < at:
            state = "skipped"
        else:
            state = "todo"
        shown.append({"name": name, "state": state, "ms": ms})
    return shown


def _work_ms(swap: SwapEvent) -> float:
    return sum(getattr(swap, f"{name}_ms") or 0.0 for name in WORK)


def _history(request: SwitchRequest) -> list[float]:
    """The work (drain to readiness) of the target's last successful switches, in ms
    (read along the (to_model, -started_at) index: the newest first, 20 at most)."""
    if request.kind == OperationKind.EVICT:
        return []
    swaps = SwapEvent.objects.filter(
        to_model=request.target_id, outcome=SwapOutcome.SUCCEEDED
    ).exclude(bringup="already_active")
    return [_work_ms(swap) for swap in swaps.order_by("-started_at", "-id")[:ESTIMATE_FROM]]


def _remaining(
    history: list[float],
    phases: list[PhaseProgress],
    current: str,
    since: datetime | None,
    ends: datetime | None,
    now: datetime,
) -> float | None:
    """The time left: the wait's rest, then the target's median work less what is done."""
    if not history:
        return (ends - now).total_seconds() * 1000 if ends and ends > now else None
    done = sum(p["ms"] or 0.0 for p in phases if p["name"] in WORK and p["state"] == "done")
    if current in WORK and since is not None:
        done += max(0.0, (now - since).total_seconds() * 1000)
    wait = (ends - now).total_seconds() * 1000 if ends and ends > now else 0.0
    return max(0.0, statistics.median(history) - done) + wait


def _next(group: str, context: _Context) -> QueuedNext | None:
    """The oldest operation queued on the group (the policy may pick another first)."""
    for request in context.pending:
        if request.group == group:
            return {
                "operation": request.pk,
                "target": request.target.name,
                "kind": request.kind,
                "trigger": request.trigger,
            }
    return None
