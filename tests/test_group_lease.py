"""A GPU group's lease: one worker runs the group's operations, however long it stays busy."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from llmux_site.core.config import parse_config
from models_app import selectors
from models_app.models import (
    OPEN_SWITCH_STATUSES,
    EngineRuntime,
    EngineState,
    GroupLease,
    ModelDefinition,
    SwapEvent,
    SwitchRequest,
    SwitchStatus,
)
from models_app.services import control, reconcile, switch_queue
from models_app.services.registry import apply_registry
from tests.plugins.engines import free_port

# Short, so a test outlives several lifetimes; not so short that a loaded 2-core box that
# stalls the renewing thread for half a second fails it (0.5 s did, under a busy CI run).
LEASE_TTL = timedelta(seconds=1.0)


@pytest.mark.django_db(transaction=True)
def test_a_holder_busy_for_longer_than_its_lease_lives_keeps_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Operations back to back for more than two lease lifetimes. The lease was once renewed
    # only while its holder waited or inside one long switch, so it expired under a busy
    # holder, and a second worker claimed it and ran a switch beside the first.
    monkeypatch.setattr(switch_queue, "LEASE_TTL", LEASE_TTL)
    monkeypatch.setattr(switch_queue, "LINGER_SECS", 0.0)
    models = [
        ModelDefinition.objects.create(name=f"m{n}", model_path=f"sim/m{n}", port=20000 + n)
        for n in range(500)  # enough that even a fast box is busy for 2+ lease lifetimes
    ]
    for model in models:
        control.stop(model)  # none runs: each is a quick, skipped operation
    group = selectors.gpu_group(models[0])

    working = threading.Event()
    done = threading.Event()
    lapsed: list[float] = []  # when the holder's lease had expired: another could claim it
    looks = 0

    def watcher() -> None:
        nonlocal looks
        try:
            working.wait(10)
            while not done.is_set():
                looks += 1
                expired = GroupLease.objects.filter(
                    group=group, holder="holder", expires_at__lt=timezone.now()
                )
                if expired.exists():
                    lapsed.append(time.monotonic())
                time.sleep(0.01)
        finally:
            connection.close()

    thread = threading.Thread(target=watcher)
    thread.start()
    started = time.monotonic()
    try:
        assert switch_queue.claim_lease(group, "holder")
        working.set()
        handled = switch_queue.process_group(group, "holder")
    finally:
        done.set()
        thread.join(10)
    busy = time.monotonic() - started

    assert handled == len(models)
    assert not SwitchRequest.objects.filter(status__in=OPEN_SWITCH_STATUSES).exists()
    assert lapsed == [], f"the lease lapsed under its busy holder {lapsed[0] - started:.2f} s in"
    # The holder was busy for more than two lifetimes of its lease, and was tried all along.
    assert busy > 2 * LEASE_TTL.total_seconds() and looks > 10, (busy, looks)
    assert GroupLease.objects.get(group=group).holder == ""  # released at the end


@pytest.mark.django_db(transaction=True)
def test_a_switch_that_loses_its_lease_is_closed_as_failed_not_left_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A request left "running" by a switch that raised would be joined by every later
    # request for its model, which would then wait for good.
    monkeypatch.setattr(switch_queue, "LEASE_TTL", timedelta(seconds=0.6))
    monkeypatch.setattr(switch_queue, "LINGER_SECS", 0.0)
    apply_registry(
        parse_config(
            {
                "vllm_command": "llmux-sim",
                "models": {
                    "slow": {
                        "model_path": "org/slow",
                        "port": free_port(),
                        "extra_args": ["--sim-startup-seconds", "5"],
                    }
                },
            }
        )
    )
    model = ModelDefinition.objects.get(name="slow")
    request = switch_queue.request_switch(model, trigger="api")
    group = request.group

    def thief() -> None:
        # Another worker takes the group once the start is under way (as after a lease
        # that expired while the database was unreachable).
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                runtime = EngineRuntime.objects.filter(model__name="slow").first()
                if runtime is not None and runtime.state == EngineState.STARTING:
                    break
                time.sleep(0.02)
            GroupLease.objects.filter(group=group).update(
                holder="thief", expires_at=timezone.now() + timedelta(minutes=5)
            )
        finally:
            connection.close()

    thread = threading.Thread(target=thief)
    thread.start()
    try:
        switch_queue.process_group(group, "holder")  # returns: nothing raised out of it
    finally:
        thread.join(15)
        # The thief repairs the group it took, as the sweep does for a dead holder.
        reconcile.roll_back_group(group, reconcile.ReconcileReport())

    request.refresh_from_db()
    assert request.status == SwitchStatus.FAILED and "lease" in request.error, request.error
    swap = SwapEvent.objects.get(to_name="slow")
    assert swap.outcome == "failed" and swap.finished_at is not None and swap.error
    assert GroupLease.objects.get(group=group).holder == "thief"  # left to its new holder
