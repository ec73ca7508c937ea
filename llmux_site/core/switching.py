"""Shared vocabulary of a switch: phases, the engines involved, the plan and its result.

The switch executor (`switcher.py`) runs a `SwitchPlan` through its phases, calling
`SwitchPorts` for everything that lives outside the core (database, web processes,
events). Engine work itself (sleep, wake, cold start, probe) is done in the core with the
supervisor and the engine client, against real processes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from llmux_site.core.addresses import ListenAddress
from llmux_site.core.eviction_policy import EvictionPolicy
from llmux_site.core.processes import EngineProcess, ProcessSpec
from llmux_site.core.readiness import ONE_TOKEN, ReadinessProbe


class Phase(enum.StrEnum):
    """The phases of a switch, in order (DESIGN.md, switch path)."""

    BACKOFF = "backoff"  # wait out the failure backoff of the group
    CHECK = "check"  # skip if nobody waits for the target any more
    COOLDOWN = "cooldown"  # the outgoing model keeps the GPU for min_active_secs
    DRAIN = "drain"  # no new requests for the outgoing model; in-flight ones finish
    EVICT = "evict"  # weights, then process, by the outgoing model's policy
    BRINGUP = "bringup"  # wake / resume / restore / cold start the target
    READINESS = "readiness"  # health, then a one-token probe
    SETTLE = "settle"  # woken requests take their slots before the lease is released


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class BringUpKind(enum.StrEnum):
    ALREADY_ACTIVE = "already_active"
    WAKE = "wake"
    RESUME = "resume"
    RESTORE = "restore"
    COLD_START = "cold_start"


class MemoryCheck(enum.StrEnum):
    """How an eviction's freeing of GPU memory was verified (the swap record keeps it)."""

    NONE = ""  # nothing was evicted
    FREED = "freed"  # the GPU probe saw the engine's memory come back
    EXITED = "exited"  # the engine's processes are gone: they hold nothing
    UNKNOWN = "unknown"  # no GPU probe applies and the processes live on: not verified


class EngineStatus(enum.StrEnum):
    """The runtime states the core reports; models_app's EngineState takes its values from here."""

    NOT_STARTED = "not_started"
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    SLEEPING = "sleeping"
    SUSPENDED = "suspended"
    CHECKPOINTED = "checkpointed"
    FAILED = "failed"
    STOPPED = "stopped"


# The states in which an engine is up on its GPUs (serving, or about to): the one set the
# switcher, the planner and the operations all test against.
AWAKE = frozenset({EngineStatus.STARTING, EngineStatus.RUNNING, EngineStatus.DRAINING})


@dataclass(frozen=True, slots=True)
class EngineTarget:
    """What the switcher knows about one model's engine."""

    name: str  # the public model name
    address: ListenAddress
    served_name: str  # the `model` the engine itself answers to (probe uses it)
    spec: ProcessSpec  # how to cold-start it
    eviction: EvictionPolicy  # how to evict it when it is the outgoing model
    status: EngineStatus
    process: EngineProcess | None = None  # the live process, if any
    evicted: EvictionPolicy | None = None  # how it was evicted, when sleeping/suspended
    activated_at: float | None = None  # wall-clock seconds when it last became active
    startup_timeout: float = 1800.0
    drain_timeout: float = 30.0
    gpu_ids: tuple[int, ...] = ()
    checkpoint_path: str | None = None  # an image to restore instead of a cold start
    readiness: ReadinessProbe = ONE_TOKEN  # what proves it serves, after /health


@dataclass(frozen=True, slots=True)
class EngineChange:
    """One engine's new status (and the identity and eviction that go with it)."""

    model: str
    status: EngineStatus
    process: EngineProcess | None = None
    evicted: EvictionPolicy | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class SwitchPlan:
    """One switch on one GPU group: evict `outgoing` (if any), bring up `incoming`."""

    group: str
    incoming: EngineTarget
    outgoing: EngineTarget | None
    min_active_secs: float = 0.0
    drain_before_switch: bool = True
    backoff_until: float | None = None  # wall clock; set after a recent failure
    settle_timeout: float = 1.0
    stop_grace: float = 10.0
    # How much GPU memory (bytes per GPU id) may remain after an eviction before the
    # eviction counts as not having freed the GPU (vLLM 0.14-0.15 sleep bug).
    memory_tolerance_bytes: int = 64 * 1024 * 1024
    force: bool = False  # skip the cooldown (operator's force switch)
    # Request-triggered switches are skipped when nobody waits any more (their requests
    # were served or gave up); operator switches always run.
    skip_if_unwanted: bool = True


@dataclass
class SwitchResult:
    outcome: Outcome
    bringup: BringUpKind | None = None
    durations_ms: dict[Phase, float] = field(default_factory=dict)
    escalated: bool = False  # the outgoing eviction failed and was escalated to stop
    memory_check: MemoryCheck = MemoryCheck.NONE  # how the eviction's freeing was verified
    forced_drain: bool = False  # the drain timed out and in-flight requests were cut
    memory_before: Mapping[int, int] = field(default_factory=dict)
    memory_after: Mapping[int, int] = field(default_factory=dict)
    incoming_process: EngineProcess | None = None
    error: str = ""


class SwitchPorts(Protocol):
    """Everything a switch needs from outside the core. Implemented by services."""

    def now(self) -> float:
        """Wall-clock seconds."""

    async def sleep(self, seconds: float) -> None: ...

    async def waiting(self, model: str) -> int:
        """Requests currently waiting for `model`, across all web processes."""

    async def begin_drain(self, model: str, process: EngineProcess | None) -> None:
        """Record `model` draining with a new drain token (one write): web processes stop
        admitting requests for it and acknowledge the token once nothing is in flight."""

    async def wait_drained(self, model: str, timeout: float) -> bool:
        """True once every web process reports no in-flight request for `model`."""

    async def phase(self, phase: Phase, elapsed_ms: float | None) -> None:
        """A phase started (elapsed_ms None) or finished; published live."""

    async def record(self, *changes: EngineChange) -> None:
        """Persist engines' new statuses, all in one write, before anything sees them."""

    async def probing(self, model: str) -> None:
        """The target answers /health and its one-token probe starts now.

        Requests that waited for it may be sent at once: their answers are held until
        the target is recorded running, and failed with the switch if the probe fails.
        """

    async def settle(self, model: str, timeout: float) -> None:
        """Wait (bounded) until requests that waited for `model` took their slots."""

    def gpu_memory(self) -> Mapping[int, int]:
        """Bytes in use per GPU id right now (NVML, or the simulator ledger)."""

    def engine_gpu_memory(self, pids: Sequence[int]) -> int | None:
        """GPU bytes held by these processes, or None where no probe can tell."""
