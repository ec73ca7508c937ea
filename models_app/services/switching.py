"""Switch requests, GPU-group leases and the switch task: one switch at a time per group."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from llmux_site.core.gpu import gpu_groups
from llmux_site.core.policy import EvictionPolicy, ProcessAction, WeightsAction
from llmux_site.core.switcher import run_eviction, run_switch
from llmux_site.core.switching import SwitchPlan, SwitchResult
from models_app.models import (
    OPEN_SWITCH_STATUSES,
    EngineRuntime,
    GroupLease,
    ModelDefinition,
    OperationKind,
    RegistryConfig,
    SwapTrigger,
    SwitchRequest,
    SwitchStatus,
)
from models_app.services import notify, scheduler
from models_app.services.runtime import AWAKE_STATES, engine_target
from models_app.services.switch_ports import DbSwitchPorts, finish_swap

log = logging.getLogger(__name__)

# Renewed every third of this while a switch runs; a dead worker's lease frees this fast.
LEASE_TTL = timedelta(seconds=15)
FAILURE_BACKOFF = timedelta(seconds=2)
POLICY_WAIT_MAX = 0.5  # look at the queue at least this often while a policy waits
LINGER_SECS = 5.0  # a group task waits this long for more work before it ends


def group_of(model: ModelDefinition) -> str:
    """The GPU group of `model`: models on intersecting GPU sets share one."""
    enabled = dict(ModelDefinition.objects.filter(enabled=True).values_list("name", "gpu_ids"))
    enabled[model.name] = model.gpu_ids
    return gpu_groups(enabled)[model.name]


def request_switch(
    model: ModelDefinition, *, trigger: str, actor: str = "", force: bool = False
) -> SwitchRequest:
    """Make sure one switch to `model` is queued (never two) and a worker will run it."""
    return request_operation(
        model, kind=OperationKind.SWITCH, trigger=trigger, actor=actor, force=force
    )


def request_operation(
    model: ModelDefinition,
    *,
    kind: str,
    trigger: str,
    actor: str = "",
    force: bool = False,
    policy: EvictionPolicy | None = None,
) -> SwitchRequest:
    """Queue one operation on `model` unless one is already open (then return that one)."""
    group = group_of(model)
    with transaction.atomic():
        existing = SwitchRequest.objects.filter(target=model, status__in=OPEN_SWITCH_STATUSES)
        found = existing.first()
        if found is not None:
            return found
        try:
            with transaction.atomic():
                request = SwitchRequest.objects.create(
                    group=group,
                    target=model,
                    kind=kind,
                    trigger=trigger,
                    actor=actor,
                    force=force,
                    weights=policy.weights.value if policy else "",
                    process=policy.process.value if policy else "",
                )
        except IntegrityError:  # another process queued it between our read and write
            return existing.get()
        transaction.on_commit(lambda: enqueue_group(group))
        notify.after_commit(notify.QUEUED)  # wakes a group task that lingers for work
    return request


def enqueue_group(group: str) -> None:
    async_task("models_app.tasks.process_group", group, task_name=f"switch {group}"[:100])


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_lease(group: str, holder: str) -> bool:
    """Take the group's lease if it is free or expired (a conditional UPDATE decides)."""
    now = timezone.now()
    GroupLease.objects.get_or_create(group=group)
    free = Q(holder="") | Q(expires_at__isnull=True) | Q(expires_at__lt=now) | Q(holder=holder)
    claimed = GroupLease.objects.filter(free, group=group).update(
        holder=holder, expires_at=now + LEASE_TTL, acquired_at=now
    )
    return claimed == 1


def renew_lease(group: str, holder: str) -> bool:
    renewed = GroupLease.objects.filter(group=group, holder=holder).update(
        expires_at=timezone.now() + LEASE_TTL
    )
    return renewed == 1


def release_lease(group: str, holder: str, *, failed: bool = False) -> None:
    fields: dict[str, object] = {"holder": "", "expires_at": None}
    if failed:
        fields["last_failure_at"] = timezone.now()
    GroupLease.objects.filter(group=group, holder=holder).update(**fields)


def process_group(group: str, holder: str | None = None) -> int:
    """Run the group's queued operations while holding its lease. Safe to run twice.

    The group's policy picks the order (fifo runs them as queued; cost_aware and
    time_slice may hold the lease and wait, looking again at the time they name).
    Returns the number of operations handled. A process that cannot take the lease
    returns at once: the holder re-checks the queue after releasing, so nothing strands.
    """
    holder = holder or new_holder()
    handled = 0
    while claim_lease(group, holder):
        failed = False
        try:
            handled, failed = _drain_queue(group, holder, handled)
        finally:
            release_lease(group, holder, failed=failed)
        if not SwitchRequest.objects.filter(group=group, status=SwitchStatus.PENDING).exists():
            break
    return handled


def _drain_queue(group: str, holder: str, handled: int) -> tuple[int, bool]:
    """Run operations as the policy picks them; linger a while for more before leaving.

    Lingering keeps the lease (and a warm worker) for LINGER_SECS after the last
    operation, woken by the bus when a new one is queued: the next switch starts at once
    instead of after a task dispatch.
    """
    failed = False
    listener = notify.bus().listen_sync()
    linger_until = time.monotonic() + LINGER_SECS
    renew_at = time.monotonic() + LEASE_TTL.total_seconds() / 3
    try:
        while True:
            request, look_again = scheduler.next_operation(group)
            if request is not None:
                failed = not run_request(request, holder) or failed
                handled += 1
                linger_until = time.monotonic() + LINGER_SECS
                renew_at = 0.0  # the run may have outlasted a renewal period
                continue
            if look_again is not None:
                # The policy waits (coalescing window, quantum): keep the lease, look again.
                pause = min(max(look_again - time.time(), 0.01), POLICY_WAIT_MAX)
            else:
                pause = min(linger_until - time.monotonic(), POLICY_WAIT_MAX)
                if pause <= 0:
                    return handled, failed
            listener.wait(pause)
            # Renew only as often as the lease needs (every message would be a write).
            if time.monotonic() >= renew_at:
                if not renew_lease(group, holder):
                    return handled, failed
                renew_at = time.monotonic() + LEASE_TTL.total_seconds() / 3
    finally:
        listener.close()


def build_eviction_plan(request: SwitchRequest, config: RegistryConfig) -> SwitchPlan:
    """An eviction of the request's target, by the request's policy or the model's."""
    target = engine_target(request.target, config)
    if request.weights:
        policy = EvictionPolicy(WeightsAction(request.weights), ProcessAction(request.process))
        target = dataclasses.replace(target, eviction=policy)
    return SwitchPlan(
        group=request.group,
        incoming=target,
        outgoing=target,
        drain_before_switch=config.drain_before_switch,
        force=True,
        skip_if_unwanted=False,
    )


def build_plan(request: SwitchRequest, config: RegistryConfig) -> SwitchPlan:
    if request.kind == OperationKind.EVICT:
        return build_eviction_plan(request, config)
    target = request.target
    outgoing_runtime = (
        EngineRuntime.objects.filter(gpu_group=request.group, state__in=AWAKE_STATES)
        .exclude(model=target)
        .select_related("model")
        .first()
    )
    lease = GroupLease.objects.get(group=request.group)
    backoff_until = None
    if lease.last_failure_at is not None:
        backoff_until = (lease.last_failure_at + FAILURE_BACKOFF).timestamp()
    return SwitchPlan(
        group=request.group,
        incoming=engine_target(target, config),
        outgoing=engine_target(outgoing_runtime.model, config) if outgoing_runtime else None,
        min_active_secs=float(config.min_active_secs),
        drain_before_switch=config.drain_before_switch,
        backoff_until=backoff_until,
        force=request.force,
        skip_if_unwanted=request.trigger == SwapTrigger.REQUEST,
    )


def run_request(request: SwitchRequest, holder: str) -> bool:
    """Carry out one switch request; True unless the switch failed."""
    config = RegistryConfig.load()
    plan = build_plan(request, config)
    ports = DbSwitchPorts(request=request, plan=plan)
    operation = run_eviction if request.kind == OperationKind.EVICT else run_switch
    try:
        result = asyncio.run(_run_with_lease(operation(plan, ports), plan.group, holder))
    finally:
        ports.close()
    finish_swap(request, ports, result)
    return result.outcome.value != "failed"


async def _run_with_lease(
    operation: Coroutine[Any, Any, SwitchResult], group: str, holder: str
) -> SwitchResult:
    """Run the operation while renewing the lease; losing the lease cancels it."""
    switch = asyncio.ensure_future(operation)
    renew = sync_to_async(renew_lease, thread_sensitive=True)
    while not switch.done():
        await asyncio.wait({switch}, timeout=LEASE_TTL.total_seconds() / 3)
        if not switch.done() and not await renew(group, holder):
            log.error("lost the lease of group %s; cancelling the switch", group)
            switch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        return await switch
    raise RuntimeError(f"the switch of group {group} was cancelled: lease lost")
