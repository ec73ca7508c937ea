"""The database side of a switch: the core switcher's `SwitchPorts`, backed by the database.

Engine state writes go through services.runtime; the swap row through SwapRecord
(adapters/swap_records.py). The database thread and the GPU probe are given by the
composition (models_app/wiring.py): this module holds no process-wide state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import TypeVar

from django.db import close_old_connections

from llmux_site.core.gpu import GpuProbe, GpuProbeError
from llmux_site.core.notify import Listener
from llmux_site.core.processes import EngineProcess
from llmux_site.core.switching import EngineChange, Phase, SwitchPlan
from models_app import protocol
from models_app.adapters.swap_records import SwapRecord
from models_app.models import ModelDefinition, SwitchRequest
from models_app.services import presence
from models_app.services.runtime import begin_drain, record_changes

T = TypeVar("T")

POLL_SECONDS = 0.02
log = logging.getLogger(__name__)


class DbSwitchPorts:
    """SwitchPorts backed by the database.

    Writes on the switch path are one per engine state change; the swap row is opened
    right after the first of them, off the path, and a phase that lasts longer than
    swap_records.LIVE_PHASE_AFTER gets its own (not awaited) write, so watchers still see
    long phases. Drain acknowledgements arrive on the host bus before web processes write
    them.
    """

    def __init__(
        self,
        *,
        request: SwitchRequest,
        plan: SwitchPlan,
        models: Sequence[ModelDefinition],
        drain_tokens: Mapping[str, int],
        db: Executor,
        gpu_probe: Callable[[], GpuProbe],
    ) -> None:
        self.drain_tokens = dict(drain_tokens)  # as read with the plan
        self.plan = plan
        self.models = {m.name: m for m in models}
        self._db_thread = db
        self._gpu_probe = gpu_probe
        self.swap_record = SwapRecord(
            request=request, plan=plan, models=self.models, db=db, gpu_memory=self.gpu_memory
        )
        self._versions: dict[str, int] = {}  # row version of each engine's last write
        self._instances: list[presence.LiveInstance] | None = None  # as waiting() read them
        self._drains: dict[str, tuple[int, dict[str, int]]] = {}  # token, acks at start
        self._bus_acks: set[tuple[str, str, int]] = set()  # (instance, model, token)
        self._signal = asyncio.Event()
        self._kinds: set[bytes] = set()  # kinds of bus messages since the last pause
        self._listener: Listener | None = None
        # A connection the database closed since the last switch is replaced first.
        self.swap_record.behind(close_old_connections)

    # -- plumbing ---------------------------------------------------------------------

    async def _db(self, func: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, func, *args)

    async def _listen(self) -> None:
        if self._listener is None:
            self._listener = await protocol.bus().listen(self._on_message)

    def _on_message(self, data: bytes) -> None:
        message = protocol.read(data)
        if isinstance(message, protocol.Drained):
            self._bus_acks.add((message.instance, message.model, message.token))
        if message is not None:  # an unreadable one only wakes: the database decides
            self._kinds.add(message.KIND)
        self._signal.set()

    async def _pause(self) -> set[bytes]:
        """Wait for a bus message (or one poll interval); the kinds that arrived."""
        await self._listen()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_SECONDS):  # wait_for may swallow a cancel
                await self._signal.wait()
        self._signal.clear()
        kinds, self._kinds = self._kinds, set()
        return kinds

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.swap_record.close()

    # -- SwitchPorts ------------------------------------------------------------------

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def waiting(self, model: str) -> int:
        self._instances = await self._db(presence.live_instances)
        waiting = presence.total_waiting(model, self._instances)
        self.swap_record.waiting[model] = waiting
        return waiting

    async def begin_drain(self, model: str, process: EngineProcess | None) -> None:
        await self._listen()  # before the write: no acknowledgement may pass unheard
        self._drains[model] = await self._db(self._begin_drain, model, process)
        self.swap_record.open_behind()

    def _begin_drain(self, model: str, process: EngineProcess | None) -> tuple[int, dict[str, int]]:
        token = begin_drain(
            self.models[model], process, self.plan.group, current_token=self.drain_tokens.get(model)
        )
        # The web processes read by the check a moment ago will do: one that came up since
        # reads the draining state before it could admit anything.
        instances = self._instances
        if instances is None:
            instances = presence.live_instances()
        return token, {i.id: int(i.drained.get(model, -1)) for i in instances}

    async def wait_drained(self, model: str, timeout: float) -> bool:
        token, acks = self._drains.get(model, (0, {}))
        deadline = time.monotonic() + timeout
        kinds: set[bytes] = set()
        while True:
            # Every web process live at the start acknowledged, on the bus or in its row.
            if all(
                acked >= token or (i, model, token) in self._bus_acks for i, acked in acks.items()
            ):
                return True
            # The database decides whenever the bus said nothing new (or a web process
            # reported): it also drops web processes that died during the drain.
            quiet = not kinds or protocol.PresenceReported.KIND in kinds
            if quiet and await self._db(presence.all_drained, model, token):
                return True
            if time.monotonic() >= deadline:
                return False
            kinds = await self._pause()

    async def phase(self, phase: Phase, elapsed_ms: float | None) -> None:
        self.swap_record.phase(phase, elapsed_ms)

    async def record(self, *changes: EngineChange) -> None:
        pairs = [(self.models[change.model], change) for change in changes]
        await self._db(self._record, pairs)
        self.swap_record.open_behind()

    def _record(self, pairs: list[tuple[ModelDefinition, EngineChange]]) -> None:
        self._versions |= record_changes(pairs, self.plan.group)

    async def probing(self, model: str) -> None:
        # A hint only (nothing is written): the row version says which start it is about,
        # so a web process never acts on a hint about an earlier start of the engine.
        version = self._versions.get(model)
        if version is not None:
            protocol.publish(protocol.Probing(model, version))

    async def settle(self, model: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        kinds: set[bytes] = set()
        while time.monotonic() < deadline:
            # Only a web process's report (or the poll interval) can change the answer.
            look = not kinds or protocol.PresenceReported.KIND in kinds
            if look and await self._db(presence.total_waiting, model) == 0:
                return
            kinds = await self._pause()

    def gpu_memory(self) -> Mapping[int, int]:
        # A reading for the record: a probe that fails must not fail the switch (or leave
        # its swap row open), so the row says "unknown" instead.
        try:
            return self._gpu_probe().used_by_device()
        except GpuProbeError as exc:
            log.warning("GPU memory not read: %s", exc)
            return {}

    def engine_gpu_memory(self, pids: Sequence[int]) -> int | None:
        return self._gpu_probe().used_by_pids(pids)
