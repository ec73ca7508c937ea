"""State and option enums shared by the models, services and API."""

from __future__ import annotations

from django.db import models

from llmux_site.core.policy import ProcessAction, WeightsAction


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
    NOT_STARTED = "not_started", "Not started"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    DRAINING = "draining", "Draining"
    SLEEPING = "sleeping", "Sleeping"
    SUSPENDED = "suspended", "CUDA suspended"
    CHECKPOINTED = "checkpointed", "Checkpointed"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"

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
