"""Make the database agree with the processes that really exist.

Runs when llmux starts, on a schedule in the worker, and when the gateway finds an engine
unreachable. It never starts engines: it records what died, finishes or rolls back what a
dead worker left half done, and lets the next request switch as usual.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from datetime import timedelta

import psutil
from django.db import transaction
from django.utils import timezone

from llmux_site.core import processes, supervisor
from llmux_site.core.engine_client import EngineClient, EngineError
from llmux_site.core.processes import VANISHED
from llmux_site.core.switching import EngineStatus
from models_app.models import (
    EngineRuntime,
    EngineState,
    GroupLease,
    SwitchRequest,
    SwitchStatus,
)
from models_app.services import audit
from models_app.services.engines import listen_address
from models_app.services.runtime import current_process, record_death, record_engine_status

log = logging.getLogger(__name__)

# Long enough to stop an engine that ignores SIGTERM (grace 10 s, then SIGKILL).
REPAIR_TTL = timedelta(seconds=60)

# States in which the recorded process must be alive.
PROCESS_STATES = (
    EngineState.STARTING,
    EngineState.RUNNING,
    EngineState.DRAINING,
    EngineState.SLEEPING,
    EngineState.SUSPENDED,
)


@dataclass
class ReconcileReport:
    died: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    abandoned_switches: list[int] = field(default_factory=list)


def reconcile() -> ReconcileReport:
    """Record dead engines, expire dead workers' leases and repair half-done switches."""
    report = ReconcileReport()
    expire_leases(report)
    for runtime in EngineRuntime.objects.filter(state__in=PROCESS_STATES).select_related("model"):
        check_runtime(runtime, report)
    return report


def check_runtime(runtime: EngineRuntime, report: ReconcileReport) -> bool:
    """Whether the engine's recorded process lives; a dead one is recorded failed."""
    process = current_process(runtime)
    if process is not None and processes.is_alive(process):
        return True
    if record_death(runtime, f"engine process {runtime.pid} exited"):
        log.warning("engine of %s (pid %s) is gone", runtime.model.name, runtime.pid)
        report.died.append(runtime.model.name)
    else:  # a switch stopped it on purpose and recorded so after this row was read
        log.debug("engine of %s (pid %s) stopped by a switch", runtime.model.name, runtime.pid)
    return False


def engine_unreachable(model_name: str) -> bool:
    """The gateway could not connect: True when the engine is gone (and now recorded so)."""
    runtime = EngineRuntime.objects.select_related("model").filter(model__name=model_name).first()
    if runtime is None or runtime.state not in PROCESS_STATES:
        return runtime is not None
    # Gone either way when its process is: recorded failed here, or already recorded
    # otherwise by a switch that wrote the row meanwhile. Acquiring again brings it up.
    return not check_runtime(runtime, ReconcileReport())


def holder_is_dead(holder: str) -> bool:
    """A holder `host:pid:nonce` on this host whose process is gone."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    # A worker killed with its parent is a zombie until init reaps it (seconds in some
    # containers, never under a PID 1 that does not reap): pid_exists() says True for it,
    # which held a dead worker's lease, and its half-done switch, until the lease expired.
    try:
        return psutil.Process(int(pid_text)).status() == psutil.STATUS_ZOMBIE
    except VANISHED:
        return True


def expire_leases(report: ReconcileReport) -> None:
    """A lease past its expiry, or held by a dead process of this host, belongs to a dead
    worker: close its switch and repair the engine states it left half done.

    The repair runs while holding the lease itself (taken over from the dead holder), so
    no new switch can start in the group until the half-started engine is stopped.
    """
    now = timezone.now()
    for lease in GroupLease.objects.exclude(holder=""):
        expired = lease.expires_at is None or lease.expires_at < now
        if not expired and not holder_is_dead(lease.holder):
            continue
        repairer = f"reconcile:{lease.holder}"[:200]
        with transaction.atomic():
            taken = GroupLease.objects.filter(pk=lease.pk, holder=lease.holder).update(
                holder=repairer, expires_at=now + REPAIR_TTL, last_failure_at=now
            )
            if not taken:
                continue
            running = SwitchRequest.objects.filter(group=lease.group, status=SwitchStatus.RUNNING)
            report.abandoned_switches += list(running.values_list("pk", flat=True))
            running.update(
                status=SwitchStatus.FAILED,
                error="the worker running this switch died",
                finished_at=now,
            )
        audit.close_operations(report.abandoned_switches)
        try:
            roll_back_group(lease.group, report)
        finally:
            GroupLease.objects.filter(pk=lease.pk, holder=repairer).update(
                holder="", expires_at=None
            )


def roll_back_group(group: str, report: ReconcileReport) -> None:
    """After a dead switch: a half-started engine is stopped, a draining one resumes."""
    for runtime in EngineRuntime.objects.filter(gpu_group=group).select_related("model"):
        process = current_process(runtime)
        alive = process is not None and processes.is_alive(process)
        if runtime.state == EngineState.STARTING:
            if alive and process is not None:
                supervisor.stop(process, grace=10)
            record_engine_status(
                runtime.model,
                EngineStatus.STOPPED,
                process=None,
                evicted=None,
                error="start-up interrupted by a worker crash",
            )
            report.rolled_back.append(runtime.model.name)
        elif runtime.state == EngineState.DRAINING and alive and process is not None:
            if engine_is_sleeping(runtime):
                # Evicted before the worker died, by a policy we cannot confirm: stop it so
                # the next switch cold-starts a known state.
                supervisor.stop(process, grace=10)
                record_engine_status(
                    runtime.model, EngineStatus.STOPPED, process=None, evicted=None
                )
            else:
                record_engine_status(
                    runtime.model, EngineStatus.RUNNING, process=process, evicted=None
                )
            report.rolled_back.append(runtime.model.name)


def engine_is_sleeping(runtime: EngineRuntime) -> bool:
    async def ask() -> bool:
        async with EngineClient(listen_address(runtime.model), retries=1) as client:
            return await client.is_sleeping()

    try:
        return asyncio.run(ask())
    except EngineError:
        return True  # unreachable counts as not serving
