"""Which queued operation of a GPU group runs next: llmux's fifo, cost_aware, time_slice."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import NamedTuple

from django.utils import timezone

from llmux_site.core.scheduling import (
    ModelDemand,
    PolicyConfig,
    QueueSnapshot,
    SwitchCostEstimator,
    decide,
)
from models_app.models import (
    EngineRuntime,
    EngineState,
    Mode,
    PolicyType,
    RegistryConfig,
    SwapEvent,
    SwapOutcome,
    SwapTrigger,
    SwitchRequest,
    SwitchStatus,
)
from models_app.services import audit, presence

HISTORY_ROWS = 200
# A request-triggered switch nobody waits for any more (its requests were served or gave
# up) is skipped once it is older than this.
ABANDONED_AFTER = timedelta(seconds=1)


class Next(NamedTuple):
    """The scheduler's answer: what to run now, or when to look again."""

    request: SwitchRequest | None  # claimed (running); None: nothing to run now
    look_again: float | None  # wall-clock time; None: only when something is queued
    config: RegistryConfig | None  # the registry settings the answer was made with


def next_operation(group: str, config: RegistryConfig | None = None) -> Next:
    """The operation to run now (claimed), or None and when to look again (None: never).

    `config`: the registry settings if the caller read them a moment ago.
    """
    pending = list(SwitchRequest.objects.filter(group=group, status=SwitchStatus.PENDING))
    if not pending:
        return Next(None, None, None)
    config = config or RegistryConfig.load()
    if config.mode == Mode.MANUAL:
        pending = skip_automatic(pending)
        if not pending:
            return Next(None, None, config)
    operator = [r for r in pending if r.trigger != SwapTrigger.REQUEST]
    if operator or config.policy_type == PolicyType.FIFO:
        # The plan reads the target itself (often ahead of time): no join here.
        return Next(claim((operator or pending)[0]), None, config)
    pending = list(
        SwitchRequest.objects.filter(pk__in=[r.pk for r in pending]).select_related("target")
    )
    active = active_runtime(group)
    names = {r.target.name for r in pending} | ({active.model.name} if active else set())
    demand = presence.group_demand(sorted(names))
    pending = skip_abandoned(pending, demand)
    snapshot = snapshot_of(active, demand)
    decision = decide(snapshot, policy_config(config), estimator(), now=time.time())
    if decision.target is not None:
        chosen = next((r for r in pending if r.target.name == decision.target), None)
        if chosen is not None:
            return Next(claim(chosen), None, config)
    tick = policy_config(config).tick_interval
    return Next(None, decision.not_before or time.time() + tick, config)


def claim(request: SwitchRequest) -> SwitchRequest | None:
    claimed = SwitchRequest.objects.filter(pk=request.pk, status=SwitchStatus.PENDING).update(
        status=SwitchStatus.RUNNING
    )
    if not claimed:
        return None
    request.status = SwitchStatus.RUNNING
    return request


def active_runtime(group: str) -> EngineRuntime | None:
    """The group's running engine (a group has at most one)."""
    return (
        EngineRuntime.objects.filter(gpu_group=group, state=EngineState.RUNNING)
        .select_related("model")
        .first()
    )


def snapshot_of(active: EngineRuntime | None, demand: dict[str, presence.Demand]) -> QueueSnapshot:
    return QueueSnapshot(
        active=active.model.name if active else None,
        active_since=active.activated_at.timestamp() if active and active.activated_at else None,
        demand={
            name: ModelDemand(waiting=w, oldest_arrival=since if w else None, in_flight=busy)
            for name, (w, since, busy) in demand.items()
        },
    )


def skip_automatic(pending: list[SwitchRequest]) -> list[SwitchRequest]:
    """In manual mode nothing switches automatically (llmux's rule): request-triggered
    switches queued before the mode changed are closed as skipped, with the reason, and
    their waiting requests answer 503. Returns the operator's operations."""
    automatic = [r.pk for r in pending if r.trigger == SwapTrigger.REQUEST]
    if automatic:
        SwitchRequest.objects.filter(pk__in=automatic, status=SwitchStatus.PENDING).update(
            status=SwitchStatus.SKIPPED,
            error="manual mode: models are not switched in automatically",
            finished_at=timezone.now(),
        )
        audit.close_operations(automatic)
    return [r for r in pending if r.trigger != SwapTrigger.REQUEST]


def skip_abandoned(
    pending: list[SwitchRequest], demand: dict[str, presence.Demand]
) -> list[SwitchRequest]:
    """Close request-triggered operations nobody waits for; return the rest."""
    cutoff = timezone.now() - ABANDONED_AFTER
    kept = []
    for request in pending:
        waiting = demand[request.target.name].waiting if request.target.name in demand else 0
        if waiting == 0 and request.created_at < cutoff:
            SwitchRequest.objects.filter(pk=request.pk, status=SwitchStatus.PENDING).update(
                status=SwitchStatus.SKIPPED,
                error="nobody waits for the model any more",
                finished_at=timezone.now(),
            )
        else:
            kept.append(request)
    return kept


def policy_config(config: RegistryConfig) -> PolicyConfig:
    return PolicyConfig(
        policy_type=config.policy_type,
        request_timeout_secs=float(config.request_timeout_secs),
        drain_before_switch=config.drain_before_switch,
        min_active_secs=float(config.min_active_secs),
        coalesce_window_ms=float(config.coalesce_window_ms),
        amortization_factor=float(config.amortization_factor),
        max_wait_secs=float(config.max_wait_secs),
        tick_interval_ms=float(config.tick_interval_ms),
        min_quantum_ms=float(config.min_quantum_ms),
    )


def estimator() -> SwitchCostEstimator:
    """Switch costs learnt from this registry's own finished swaps."""
    rows = (
        SwapEvent.objects.filter(outcome=SwapOutcome.SUCCEEDED)
        .exclude(to_name="")
        .order_by("-id")
        .values_list("from_name", "to_name", "total_ms", "finished_at")[:HISTORY_ROWS]
    )
    return SwitchCostEstimator(
        (from_name or None, to_name, total_ms, finished)
        for from_name, to_name, total_ms, finished in rows
    )
