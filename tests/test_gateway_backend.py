"""The web process's view of llmux takes engine states and drains from the host bus."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import pytest
from asgiref.sync import sync_to_async

from llmux_site.core.processes import EngineProcess
from llmux_site.core.switching import EngineStatus
from models_app import protocol
from models_app.adapters.gateway import DjangoGatewayBackend
from models_app.models import ModelDefinition
from models_app.protocol import CommittedState, Drained, EngineStates
from models_app.services.runtime import begin_drain, record_engine_status
from tests.plugins.engines import free_port

# Committed rows: the backend reads the database from a thread of its own.
pytestmark = pytest.mark.django_db(transaction=True)


async def until(check: Callable[[], object], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await sync_to_async(check)():
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def listeners() -> int:
    return len(list(protocol.bus().directory.glob("*.sock")))


async def started_backend() -> DjangoGatewayBackend:
    await sync_to_async(ModelDefinition.objects.create)(
        name="alpha", model_path="m/alpha", port=free_port()
    )
    backend = await sync_to_async(DjangoGatewayBackend.create)()
    before = listeners()
    await backend.start()
    await until(lambda: listeners() > before)  # its refresher listens on the bus
    return backend


async def test_a_state_pushed_on_the_bus_admits_a_waiter_the_database_would_not() -> None:
    backend = await started_backend()
    waiter = asyncio.ensure_future(backend.acquire("alpha", deadline=time.monotonic() + 10))
    try:
        # It queued a switch.
        await until(
            lambda: (
                "alpha" in backend.admission.waiters
                and backend.admission.waiters["alpha"].switch_id
            )
        )
        assert not waiter.done()
        # No worker runs the switch and the table never says running: only the bus can.
        protocol.publish(EngineStates({"alpha": CommittedState("running", 0, 1)}))
        slot = await asyncio.wait_for(waiter, 1.0)
        assert slot.route.model == "alpha"
        slot.release()
    finally:
        waiter.cancel()
        await backend.aclose()


async def test_a_drain_with_nothing_in_flight_is_acknowledged_on_the_bus_at_once() -> None:
    backend = await started_backend()
    heard: list[bytes] = []
    listener = await protocol.bus().listen(heard.append)
    try:
        protocol.publish(EngineStates({"alpha": CommittedState("draining", 4, 1)}))
        drained = Drained(backend.instance_id, "alpha", 4)
        await until(lambda: drained in [protocol.read(m) for m in heard], timeout=1.0)
    finally:
        listener.close()
        await backend.aclose()


def record_running() -> None:
    model = ModelDefinition.objects.get(name="alpha")
    process = EngineProcess(pid=os.getpid(), create_time=1.0, pgid=os.getpid())
    record_engine_status(model, EngineStatus.RUNNING, process=process, evicted=None)


def record_draining() -> int:
    model = ModelDefinition.objects.get(name="alpha")
    return begin_drain(model, EngineProcess(pid=os.getpid(), create_time=1.0, pgid=os.getpid()))


async def test_a_drain_is_acknowledged_when_the_last_request_in_flight_ends() -> None:
    backend = await started_backend()
    heard: list[bytes] = []
    listener = await protocol.bus().listen(heard.append)
    try:
        # As a worker does: the state is committed, then pushed.
        await sync_to_async(record_running)()
        slot = await asyncio.wait_for(backend.acquire("alpha", deadline=time.monotonic() + 5), 1)
        token = await sync_to_async(record_draining)()
        await asyncio.sleep(0.3)
        assert not [m for m in heard if m.startswith(Drained.KIND)]  # one still in flight
        slot.release()
        drained = Drained(backend.instance_id, "alpha", token)
        await until(lambda: drained in [protocol.read(m) for m in heard], timeout=1.0)
    finally:
        listener.close()
        await backend.aclose()
