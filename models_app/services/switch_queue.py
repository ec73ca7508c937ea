"""Switch requests, GPU-group leases and the switch task: one switch at a time per group."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from llmux_site.core.eviction_policy import EvictionPolicy
from llmux_site.core.notify import SyncListener
from llmux_site.core.switcher import run_eviction, run_switch
from llmux_site.core.switching import Outcome, SwitchResult
from models_app import protocol, selectors, wiring
from models_app.adapters.swap_records import finish_swap
from models_app.adapters.switch_ports import DbSwitchPorts
from models_app.models import (
    OPEN_SWITCH_STATUSES,
    GroupLease,
    ModelDefinition,
    OperationKind,
    RegistryConfig,
    SwitchRequest,
    SwitchStatus,
)
from models_app.services import audit, next_operation, pins, reconcile
from models_app.services.planning import SwitchState, build_plan, read_switch_state

log = logging.getLogger(__name__)

# Renewed every third of this while a switch runs; a dead worker's lease frees this fast.
LEASE_TTL = timedelta(seconds=15)
POLICY_WAIT_MAX = 0.5  # look at the queue at least this often while a policy waits
LINGER_SECS = 5.0  # a group task waits this long for more work before it ends


def request_switch(
    model: ModelDefinition,
    *,
    trigger: str,
    actor: str = "",
    force: bool = False,
    group: str | None = None,
) -> SwitchRequest:
    """Make sure one switch to `model` is queued (never two) and a worker will run it."""
    return request_operation(
        model, kind=OperationKind.SWITCH, trigger=trigger, actor=actor, force=force, group=group
    )


def request_operation(
    model: ModelDefinition,
    *,
    kind: str,
    trigger: str,
    actor: str = "",
    force: bool = False,
    policy: EvictionPolicy | None = None,
    group: str | None = None,
) -> SwitchRequest:
    """Queue one operation on `model` unless one is already open (then return that one).

    `group` saves a query when the caller knows the model's GPU group.
    """
    group = group or selectors.gpu_group(model)
    new = SwitchRequest(
        group=group,
        target=model,
        kind=kind,
        trigger=trigger,
        actor=actor,
        force=force,
        weights=policy.weights.value if policy else "",
        process=policy.process.value if policy else "",
    )
    with transaction.atomic():
        # At most one open operation per model (a partial unique constraint): the insert
        # is skipped when one exists, and the open one, ours or not, is read back.
        SwitchRequest.objects.bulk_create([new], ignore_conflicts=True)
        request = SwitchRequest.objects.get(target=model, status__in=OPEN_SWITCH_STATUSES)
        if request.created_at != new.created_at:
            return request  # joined the operation someone else queued
        # A holder (a lingering group task) is woken by this and runs the request; if it
        # is just ending, it looks at the queue once more after releasing the lease, and
        # if it died, the sweep re-queues the request once the lease expired. Published
        # before the task is enqueued: a lingering holder need not wait for the broker.
        protocol.after_commit(protocol.Queued())
        if not lease_held(group):
            transaction.on_commit(lambda: enqueue_group(group))
    return request


def enqueue_group(group: str) -> None:
    async_task("models_app.tasks.process_group", group, task_name=f"switch {group}"[:100])


def lease_held(group: str) -> bool:
    """True while a live worker holds the group's lease (it will see new requests).

    Locks the lease row until the caller's transaction ends, so the holder cannot
    release it in between: its look at the queue after releasing sees what we queued.
    """
    held = GroupLease.objects.select_for_update().filter(group=group, expires_at__gt=timezone.now())
    return held.exclude(holder="").exists()


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


def release_lease(group: str, holder: str) -> None:
    GroupLease.objects.filter(group=group, holder=holder).update(holder="", expires_at=None)


def lease_failure(group: str) -> datetime | None:
    """When an operation of the group last failed (the failure backoff counts from it)."""
    return GroupLease.objects.filter(group=group).values_list("last_failure_at", flat=True).first()


@dataclass
class LeaseSession:
    """What a lease holder knows of its group between operations (saves reading it)."""

    group: str
    last_failure_at: datetime | None
    read_ahead: SwitchState | None = None  # read when a web process announced demand

    def on_message(self, message: bytes | None) -> bool:
        """Read ahead for announced demand in this group; True if the message was that."""
        wanted = protocol.read(message)
        if not isinstance(wanted, protocol.Wanted):
            return False
        if wanted.group == self.group:
            self.read_ahead = read_switch_state(self.group, wanted.model_id)
        return True


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
        try:
            handled = _drain_queue(group, holder, handled)
        finally:
            release_lease(group, holder)
        if not SwitchRequest.objects.filter(group=group, status=SwitchStatus.PENDING).exists():
            break
    return handled


def _drain_queue(group: str, holder: str, handled: int) -> int:
    """Run operations as the policy picks them; linger a while for more before leaving."""
    session = LeaseSession(group, lease_failure(group))
    listener = protocol.bus().listen_sync()
    linger_until = time.monotonic() + LINGER_SECS
    renew_every = LEASE_TTL.total_seconds() / 3
    renew_at = time.monotonic() + renew_every
    try:
        while True:
            # Renewed between operations too, not only while waiting: a busy group runs
            # them back to back for longer than the lease lives, and an expired lease
            # lets a second worker claim it and run a switch beside ours.
            if time.monotonic() >= renew_at:
                if not renew_lease(group, holder):
                    return handled
                renew_at = time.monotonic() + renew_every
            ahead = session.read_ahead
            known = ahead.config if ahead is not None and ahead.is_fresh() else None
            request, look_again, config = next_operation.next_operation(group, known)
            if request is not None:
                run_request(request, holder, config, session)
                handled += 1
                linger_until = time.monotonic() + LINGER_SECS
            elif look_again is not None:
                # The policy waits (coalescing window, quantum): keep the lease, look again.
                pause = min(max(look_again - time.time(), 0.01), POLICY_WAIT_MAX)
                _wait_for_news(listener, session, pause, only=None)
            elif not linger_for_more_work(listener, session, linger_until):
                return handled
    finally:
        listener.close()


def linger_for_more_work(listener: SyncListener, session: LeaseSession, until: float) -> bool:
    """Keep the lease (and a warm worker) until `until`, woken by the bus when an operation
    is queued; False once the linger is over and the group task should end.

    Why: the next switch starts at once instead of after a django-q2 task dispatch. The
    figures of docs/PERFORMANCE.md, "Switch orchestration overhead" (50.3 ms p50 embedded,
    53.2 ms redis against a <= 50 ms target) are of back-to-back switches, each picked up by
    the lingering task; a switch that waits for a new task adds the broker's dispatch to
    them. LINGER_SECS bounds what a worker holds for it.
    """
    pause = min(until - time.monotonic(), POLICY_WAIT_MAX)
    if pause <= 0:
        return False
    # Only a newly queued operation (or demand announced ahead of it) is news to it.
    _wait_for_news(listener, session, pause, only=(protocol.Queued.KIND, protocol.Wanted.KIND))
    return True


def _wait_for_news(
    listener: SyncListener, session: LeaseSession, pause: float, *, only: tuple[bytes, ...] | None
) -> None:
    """Wait up to `pause` for a bus message (of the kinds in `only`); read ahead on demand."""
    message = listener.wait(pause, only=only)
    if session.on_message(message):
        # Its request is being written now: wait for it rather than look early.
        listener.wait(min(pause, 0.1), only=protocol.Queued.KIND)


def run_request(
    request: SwitchRequest,
    holder: str,
    config: RegistryConfig | None = None,
    session: LeaseSession | None = None,
) -> bool:
    """Carry out one switch request; True unless the switch failed."""
    config = config or RegistryConfig.load()
    failed_at = session.last_failure_at if session else lease_failure(request.group)
    read_ahead = session.read_ahead if session else None
    if session is not None:
        session.read_ahead = None  # this switch changes the state it read
    planned = build_plan(request, config, failed_at, read_ahead)
    plan = planned.plan
    ports = wiring.switch_ports(
        request, plan, models=planned.models, drain_tokens=planned.drain_tokens
    )
    operation = run_eviction if request.kind == OperationKind.EVICT else run_switch
    switch = operation(plan, ports, process_actions=wiring.worker_process_actions())
    try:
        result = asyncio.run(_run_with_lease(switch, plan.group, holder))
    except Exception as exc:  # whatever it was, the request must be closed
        result = _broken(plan.group, holder, exc)
    finally:
        _close_ports(ports)
    finish_swap(request, ports.swap_record, result)
    audit.close_operations([request.pk])  # the operator's entry gets the outcome
    if result.outcome is Outcome.FAILED:
        pins.undo_failed_pin(request, result.error)
        # Written now, not when the lease is released: the next operation of this
        # session backs off from it too.
        now = timezone.now()
        GroupLease.objects.filter(group=request.group).update(last_failure_at=now)
        if session is not None:
            session.last_failure_at = now
        return False
    return True


def _broken(group: str, holder: str, exc: Exception) -> SwitchResult:
    """The result of a switch that raised: a lost lease or a bug, not an engine's failure
    (the switcher reports those). The request is closed as failed all the same, or every
    later request for the model would join it and wait for good; and the engines it left
    half done are repaired as after a worker's death, unless another worker has the group.
    """
    log.exception("the switch of group %s stopped: %s", group, exc)
    if renew_lease(group, holder):
        reconcile.roll_back_group(group, reconcile.ReconcileReport())
    return SwitchResult(Outcome.FAILED, error=f"the switch stopped on an internal error: {exc}")


def _close_ports(ports: DbSwitchPorts) -> None:
    """Finish the writes issued behind the switch; one that failed is written again when
    the swap row is closed, so its error is logged rather than raised."""
    try:
        ports.close()
    except Exception:
        log.exception("a write behind the switch failed; the swap row is closed anyway")


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
