"""State and option enums shared by the models, services and API."""

from __future__ import annotations

from django.db import models

from llmux_site.core.eviction_policy import ProcessAction, WeightsAction
from llmux_site.core.switching import AWAKE, EngineStatus


class EngineKind(models.TextChoices):
    VLLM = "vllm", "vLLM"
    SIMULATOR = "simulator", "llmux-sim (simulated engine)"
    GENERIC = "generic", "Generic OpenAI-compatible command"


class Weights(models.TextChoices):
    RETAIN = WeightsAction.RETAIN.value, "Retain"
    OFFLOAD = WeightsAction.OFFLOAD.value, "Offload to CPU RAM (vLLM sleep 1)"
    DISCARD = WeightsAction.DISCARD.value, "Discard (vLLM sleep 2)"


class Process(models.TextChoices):
    KEEP_RUNNING = ProcessAction.KEEP_RUNNING.value, "Keep running"
    CUDA_SUSPEND = ProcessAction.CUDA_SUSPEND.value, "CUDA suspend"
    CHECKPOINT = ProcessAction.CHECKPOINT.value, "CRIU checkpoint"
    STOP = ProcessAction.STOP.value, "Stop"


class EngineState(models.TextChoices):
    """The core's EngineStatus as a database choice: same names, same values."""

    NOT_STARTED = EngineStatus.NOT_STARTED.value, "Not started"
    STARTING = EngineStatus.STARTING.value, "Starting"
    RUNNING = EngineStatus.RUNNING.value, "Running"
    DRAINING = EngineStatus.DRAINING.value, "Draining"
    SLEEPING = EngineStatus.SLEEPING.value, "Sleeping"
    SUSPENDED = EngineStatus.SUSPENDED.value, "CUDA suspended"
    CHECKPOINTED = EngineStatus.CHECKPOINTED.value, "Checkpointed"
    FAILED = EngineStatus.FAILED.value, "Failed"
    STOPPED = EngineStatus.STOPPED.value, "Stopped"

    @classmethod
    def awake(cls) -> frozenset[str]:
        """States in which the engine is up on its GPUs (the core's AWAKE)."""
        return frozenset(cls(status.value) for status in AWAKE)

    @classmethod
    def with_process(cls) -> frozenset[str]:
        """States in which an engine process exists and its identity is recorded."""
        return frozenset({cls.STARTING, cls.RUNNING, cls.DRAINING, cls.SLEEPING, cls.SUSPENDED})


class SwapTrigger(models.TextChoices):
    REQUEST = "request", "Client request"
    API = "api", "Management API"
    DASHBOARD = "dashboard", "Dashboard"
    POLICY = "policy", "Scheduling policy"
    TTL = "ttl", "Idle timeout"
    WARMUP = "warmup", "Warmup"


class OperationKind(models.TextChoices):
    """What a switch request (and the swap it leads to) does to its target."""

    SWITCH = "switch", "Make active"
    EVICT = "evict", "Evict"


class SwapOutcome(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    ROLLED_BACK = "rolled_back", "Rolled back"


class BringUp(models.TextChoices):
    NONE = "", "None"
    WAKE = "wake", "Wake"
    RESUME = "resume", "CUDA resume"
    RESTORE = "restore", "CRIU restore"
    COLD_START = "cold_start", "Cold start"
    ALREADY_ACTIVE = "already_active", "Already active"


class MemoryCheck(models.TextChoices):
    """How a swap's eviction was seen to free GPU memory (core.switching.MemoryCheck)."""

    NONE = "", "Nothing evicted"
    FREED = "freed", "Freed (GPU probe)"
    EXITED = "exited", "Engine processes gone"
    UNKNOWN = "unknown", "Not verified (no GPU probe)"


class Verdict(models.TextChoices):
    """What `llmux_validate` concluded about one policy."""

    PASS = "pass", "Pass"
    FAIL = "fail", "Fail"
    UNVERIFIED = "unverified", "Unverified"  # nothing failed, but memory could not be read
    REFUSED = "refused", "Refused"  # not tried: this host or engine cannot do it


class PolicyType(models.TextChoices):
    FIFO = "fifo", "FIFO"
    COST_AWARE = "cost_aware", "Cost-aware"
    TIME_SLICE = "time_slice", "Time slice"


class Mode(models.TextChoices):
    AUTO = "auto", "Automatic"
    MANUAL = "manual", "Manual"
