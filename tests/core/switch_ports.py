"""An in-memory `SwitchPorts` (the one seam faked in the switch tests) and simulated models.

`InMemoryPorts` stands in for the services: it records phases and engine changes, answers
`waiting()` from a dict, drains with an in-flight counter, and reads GPU memory from the
real simulator ledger. It also plays the database: `ports.target(model)` is the model as
the next switch would read it back. `SimModels` makes `EngineTarget`s that cold-start real
simulator processes with small weights, on free loopback ports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmux_site.core import supervisor
from llmux_site.core.addresses import ListenAddress
from llmux_site.core.eviction_policy import EvictionPolicy
from llmux_site.core.gpu_ledger import ledger_entries, read_ledger
from llmux_site.core.launch import build_engine_command
from llmux_site.core.processes import EngineProcess, ProcessSpec
from llmux_site.core.switching import EngineChange, EngineStatus, EngineTarget, Phase
from tests.plugins.engines import free_port

# Small weights and KV cache keep every start, sleep and wake in the milliseconds.
FAST_SIM_ARGS = (
    "--sim-startup-seconds",
    "0",
    "--sim-weights-bytes",
    "256KiB",
    "--sim-kv-bytes",
    "256KiB",
)
OFFLOAD = EvictionPolicy.from_label("offload+keep_running")
DISCARD = EvictionPolicy.from_label("discard+keep_running")
STOP = EvictionPolicy.from_label("retain+stop")


class InMemoryPorts:
    """`SwitchPorts` kept in memory, with GPU memory read from the simulator ledger."""

    def __init__(self, ledger_dir: Path, *, waiting: Mapping[str, int] | None = None) -> None:
        self.ledger_dir = ledger_dir
        self.waiting_for: dict[str, int] = dict(waiting or {})
        self.in_flight: dict[str, int] = {}
        self.draining: set[str] = set()
        self.phases: list[tuple[Phase, float | None]] = []
        self.changes: list[EngineChange] = []
        self.settled: list[tuple[str, float]] = []
        self.probed: list[str] = []
        self.slept: list[float] = []
        self.activated_at: dict[str, float] = {}
        self.on_change: Callable[[EngineChange], Awaitable[None]] | None = None
        self.on_phase: Callable[[Phase, float | None], Awaitable[None]] | None = None
        self._requests_changed = asyncio.Condition()

    # -- SwitchPorts --------------------------------------------------------------------

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(seconds)

    async def waiting(self, model: str) -> int:
        return self.waiting_for.get(model, 0)

    async def begin_drain(self, model: str, process: EngineProcess | None) -> None:
        self.draining.add(model)
        await self.record(EngineChange(model, EngineStatus.DRAINING, process))

    async def wait_drained(self, model: str, timeout: float) -> bool:
        async with self._requests_changed:
            try:
                async with asyncio.timeout(timeout):
                    await self._requests_changed.wait_for(lambda: not self.in_flight.get(model))
            except TimeoutError:
                return False
        return True

    async def phase(self, phase: Phase, elapsed_ms: float | None) -> None:
        self.phases.append((phase, elapsed_ms))
        if self.on_phase is not None:
            await self.on_phase(phase, elapsed_ms)

    async def record(self, *changes: EngineChange) -> None:
        for change in changes:
            self.changes.append(change)
            if change.status is EngineStatus.RUNNING:
                self.activated_at[change.model] = self.now()
                self.draining.discard(change.model)
            if self.on_change is not None:
                await self.on_change(change)

    async def probing(self, model: str) -> None:
        self.probed.append(model)

    async def settle(self, model: str, timeout: float) -> None:
        self.settled.append((model, timeout))

    def gpu_memory(self) -> Mapping[int, int]:
        return read_ledger(self.ledger_dir)

    def engine_gpu_memory(self, pids: Sequence[int]) -> int | None:
        wanted = set(pids)
        return sum(entry.bytes for entry in ledger_entries(self.ledger_dir) if entry.pid in wanted)

    # -- test helpers -------------------------------------------------------------------

    async def start_request(self, model: str) -> None:
        async with self._requests_changed:
            self.in_flight[model] = self.in_flight.get(model, 0) + 1

    async def finish_request(self, model: str) -> None:
        async with self._requests_changed:
            self.in_flight[model] -= 1
            self._requests_changed.notify_all()

    def last(self, model: str) -> EngineChange:
        return [change for change in self.changes if change.model == model][-1]

    def statuses(self, model: str) -> list[EngineStatus]:
        return [change.status for change in self.changes if change.model == model]

    def phase_names(self) -> list[Phase]:
        """Phases in the order they started."""
        return [phase for phase, elapsed in self.phases if elapsed is None]

    def target(self, base: EngineTarget) -> EngineTarget:
        """`base` as the database would now hold it (status, identity, eviction)."""
        if not any(change.model == base.name for change in self.changes):
            return base
        last = self.last(base.name)
        return dataclasses.replace(
            base,
            status=last.status,
            process=last.process,
            evicted=last.evicted,
            activated_at=self.activated_at.get(base.name),
        )

    def holders(self) -> dict[str, int]:
        """Model -> GPU bytes, for every live engine in the ledger that holds any."""
        return {e.model: e.bytes for e in ledger_entries(self.ledger_dir) if e.bytes > 0}

    def processes(self) -> list[EngineProcess]:
        return [change.process for change in self.changes if change.process is not None]


@dataclass
class SimModels:
    """Makes simulated models' `EngineTarget`s and ports under `root`; `close` stops them all."""

    root: Path
    tracked: list[EngineProcess] = field(default_factory=list)
    made_ports: list[InMemoryPorts] = field(default_factory=list)

    @property
    def ledger_dir(self) -> Path:
        return self.root / "ledger"

    def ports(self, waiting: Mapping[str, int] | None = None) -> InMemoryPorts:
        ports = InMemoryPorts(self.ledger_dir, waiting=waiting)
        self.made_ports.append(ports)
        return ports

    def track(self, process: EngineProcess) -> EngineProcess:
        """Stop `process` at teardown whatever happens (for engines started outside ports)."""
        self.tracked.append(process)
        return process

    def target(
        self,
        name: str,
        *faults: str,
        eviction: EvictionPolicy = OFFLOAD,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 20.0,
        drain_timeout: float = 5.0,
        uds: bool = False,
    ) -> EngineTarget:
        """A not-yet-started simulated model; `faults` are `--sim-fault` specs.

        `uds`: listen on a Unix socket (CRIU cannot dump a TCP socket on this kernel).
        """
        if uds:
            (self.root / "run").mkdir(parents=True, exist_ok=True)
            socket_path = self.root / "run" / f"{name.replace('/', '_')}.sock"
            address = ListenAddress.unix(str(socket_path))
        else:
            address = ListenAddress.tcp(free_port())
        fault_args = [arg for spec in faults for arg in ("--sim-fault", spec)]
        command = build_engine_command(
            "simulator",
            model_path=name,
            address=address,
            extra_args=[*FAST_SIM_ARGS, *fault_args, *extra_args],
        )
        env = {
            "LLMUX_SIM_LEDGER_DIR": str(self.ledger_dir),
            "LLMUX_SIM_CACHE_DIR": str(self.root / "cache"),
            **command.env,
        }
        log_path = self.root / "logs" / f"{name.replace('/', '_')}.log"
        return EngineTarget(
            name=name,
            address=address,
            served_name=name,
            spec=ProcessSpec(argv=command.argv, log_path=log_path, env=env, uds=address.uds),
            eviction=eviction,
            status=EngineStatus.NOT_STARTED,
            startup_timeout=startup_timeout,
            drain_timeout=drain_timeout,
        )

    def close(self) -> None:
        seen = [p for ports in self.made_ports for p in ports.processes()]
        for process in [*seen, *self.tracked]:
            supervisor.stop(process, grace=2.0)
