"""Warmup (llmux 0.7): cold-start each model once at start-up, probe it, leave it evicted.

The first real request is then a wake, not a cold start. Each GPU group is warmed by one
task holding the group's lease, so warmup never runs beside a switch.
"""

from __future__ import annotations

import time

from django.db.models import Q
from django_q.tasks import async_task

from models_app import selectors
from models_app.models import (
    ModelDefinition,
    OperationKind,
    RegistryConfig,
    SwapTrigger,
    SwitchRequest,
    SwitchStatus,
)
from models_app.services import switch_queue

LEASE_WAIT_SECS = 600.0


def warmup_models() -> list[ModelDefinition]:
    """Models to warm: those with `warmup: true`, or all when the registry says so."""
    enabled = ModelDefinition.objects.filter(enabled=True)
    if RegistryConfig.load().warmup:
        return list(enabled.exclude(warmup=False))
    return list(enabled.filter(warmup=True))


def schedule_warmup() -> list[str]:
    """Queue one warmup task per GPU group that has models to warm; returns the groups."""
    groups: dict[str, list[int]] = {}
    for model in warmup_models():
        groups.setdefault(selectors.gpu_group(model), []).append(model.pk)
    for group, ids in groups.items():
        async_task("models_app.tasks.warm_up", group, ids, task_name=f"warmup {group}"[:100])
    return sorted(groups)


def warm_up(group: str, model_ids: list[int]) -> int:
    """Cold-start, probe and evict each model of the group in turn; returns models warmed."""
    holder = switch_queue.new_holder()
    deadline = time.monotonic() + LEASE_WAIT_SECS
    while not switch_queue.claim_lease(group, holder):
        if time.monotonic() > deadline:
            return 0
        time.sleep(0.5)
    warmed = 0
    try:
        for model in ModelDefinition.objects.filter(pk__in=model_ids).order_by("name"):
            up = _operation(group, model, OperationKind.SWITCH)
            if up is None or not switch_queue.run_request(up, holder):
                continue
            down = _operation(group, model, OperationKind.EVICT)
            if down is not None and switch_queue.run_request(down, holder):
                warmed += 1
    finally:
        switch_queue.release_lease(group, holder)
    return warmed


def _operation(group: str, model: ModelDefinition, kind: str) -> SwitchRequest | None:
    """A running operation row for the audit trail; None when another one is open."""
    if SwitchRequest.objects.filter(
        Q(target=model) & Q(status__in=[SwitchStatus.PENDING, SwitchStatus.RUNNING])
    ).exists():
        return None
    return SwitchRequest.objects.create(
        group=group,
        target=model,
        kind=kind,
        trigger=SwapTrigger.WARMUP,
        force=True,
        status=SwitchStatus.RUNNING,
    )
