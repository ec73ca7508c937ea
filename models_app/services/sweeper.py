"""The worker's health sweep: reconcile every second, re-queue stranded switches."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task

from models_app import image_port
from models_app.models import GroupLease, SwitchRequest, SwitchStatus
from models_app.services import playground_keys, switch_queue
from models_app.services.reconcile import reconcile

log = logging.getLogger(__name__)

SWEEP_LEASE = "__sweep__"
STOPPED = "stopped"  # the sweep lease's holder while llmux shuts down
STOPPED_FOR = timedelta(minutes=5)
SWEEP_INTERVAL = 1.0
# A sweep task runs a little under the schedule's minute, so at most one is alive at a time
# (the lease makes sure of it) and a dead one is replaced within a minute.
SWEEP_RUN_SECONDS = 55.0
STRANDED_AFTER = timedelta(seconds=3)
GC_EVERY_PASSES = 30  # images of deleted models and superseded images: twice a minute


def install_schedules() -> None:
    """Create (or repair) the minute schedule that keeps a sweep running."""
    # A worker starting now may sweep again, whatever an earlier stop said.
    GroupLease.objects.filter(group=SWEEP_LEASE, holder=STOPPED).update(holder="", expires_at=None)
    Schedule.objects.update_or_create(
        name="llmux-sweep",
        defaults={
            "func": "models_app.tasks.sweep",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
            "next_run": timezone.now(),
        },
    )
    # Start one now rather than at the scheduler's next look; the lease keeps it single.
    async_task("models_app.tasks.sweep", task_name="llmux sweep")


def sweep(run_seconds: float = SWEEP_RUN_SECONDS) -> int:
    """Reconcile every SWEEP_INTERVAL for `run_seconds`; returns the number of passes.

    Revoking the sweep's lease (`stop_sweep`, as `llmux serve` does when it stops) ends
    the loop within a pass, so the worker cluster can shut down without waiting a minute.
    """
    holder = switch_queue.new_holder()
    if not switch_queue.claim_lease(SWEEP_LEASE, holder):
        return 0
    passes = 0
    deadline = time.monotonic() + run_seconds
    try:
        while time.monotonic() < deadline:
            if not switch_queue.renew_lease(SWEEP_LEASE, holder):
                break
            one_pass(passes)
            passes += 1
            time.sleep(SWEEP_INTERVAL)
    finally:
        switch_queue.release_lease(SWEEP_LEASE, holder)
    return passes


def stop_sweep() -> None:
    """Revoke the sweep's lease: a running sweep notices at its next renewal and ends.

    The lease is left held by STOPPED (for a few minutes) rather than free, so a sweep
    the scheduler starts during the shutdown cannot take it and hold the worker up.
    """
    GroupLease.objects.get_or_create(group=SWEEP_LEASE)
    GroupLease.objects.filter(group=SWEEP_LEASE).update(
        holder=STOPPED, expires_at=timezone.now() + STOPPED_FOR
    )


def one_pass(passes: int = 0) -> None:
    try:
        report = reconcile()
        if report.died or report.rolled_back or report.abandoned_switches:
            log.warning("reconcile: %s", report)
        requeue_stranded()
        image_port.recover()
        if passes % GC_EVERY_PASSES == 0:
            image_port.collect_garbage()
            playground_keys.delete_expired()
    except Exception:  # one bad pass must not end the sweep
        log.exception("sweep pass failed")


def requeue_stranded(*, immediately: bool = False) -> None:
    """Pending switches whose group has no live lease lost their task (a worker died)."""
    now = timezone.now()
    cutoff = now if immediately else now - STRANDED_AFTER
    old = SwitchRequest.objects.filter(status=SwitchStatus.PENDING, created_at__lt=cutoff)
    for group in set(old.values_list("group", flat=True)):
        busy = GroupLease.objects.filter(
            Q(group=group) & ~Q(holder="") & Q(expires_at__gte=now)
        ).exists()
        if not busy:
            switch_queue.enqueue_group(group)
