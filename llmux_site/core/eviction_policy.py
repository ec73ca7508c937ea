"""The two-axis eviction policy and its mapping onto llmux 0.5's sleep levels."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class WeightsAction(enum.StrEnum):
    """What happens to the model weights on eviction."""

    RETAIN = "retain"  # weights stay where they are (on the GPU, or inside a suspended process)
    OFFLOAD = "offload"  # vLLM sleep level 1: weights to CPU RAM, KV cache dropped
    DISCARD = "discard"  # vLLM sleep level 2: weights and KV cache dropped, reloaded on wake


class ProcessAction(enum.StrEnum):
    """What happens to the engine process on eviction (after the weights action)."""

    KEEP_RUNNING = "keep_running"
    CUDA_SUSPEND = "cuda_suspend"  # CUDA driver checkpoint: device memory to host
    CHECKPOINT = "checkpoint"  # CRIU dump of the whole process tree to disk
    STOP = "stop"


class PolicyError(ValueError):
    """An eviction policy that cannot work."""


@dataclass(frozen=True, slots=True)
class EvictionPolicy:
    """How a model gives its GPU back: first its weights, then its process."""

    weights: WeightsAction
    process: ProcessAction

    def __post_init__(self) -> None:
        if self.weights is WeightsAction.RETAIN and self.process is ProcessAction.KEEP_RUNNING:
            raise PolicyError(
                "eviction weights=retain with process=keep_running frees no GPU memory; "
                "choose offload/discard weights or a process action"
            )

    @classmethod
    def parse(cls, weights: str, process: str) -> EvictionPolicy:
        try:
            w = WeightsAction(weights)
        except ValueError:
            raise PolicyError(
                f"unknown weights action {weights!r}; expected one of "
                + ", ".join(a.value for a in WeightsAction)
            ) from None
        try:
            p = ProcessAction(process)
        except ValueError:
            raise PolicyError(
                f"unknown process action {process!r}; expected one of "
                + ", ".join(a.value for a in ProcessAction)
            ) from None
        return cls(w, p)

    @classmethod
    def from_sleep_level(cls, level: int) -> EvictionPolicy:
        """llmux 0.5's `sleep_level` 1-5."""
        try:
            return SLEEP_LEVELS[level]
        except KeyError:
            raise PolicyError(f"unknown sleep_level {level!r}; expected 1, 2, 3, 4 or 5") from None

    @property
    def sleep_level(self) -> int | None:
        """The llmux 0.5 sleep level this policy equals, if any (for export)."""
        for level, policy in SLEEP_LEVELS.items():
            if policy == self:
                return level
        return None

    @property
    def vllm_sleep_level(self) -> int | None:
        """The vLLM `/sleep?level=` call made before the process action, if any."""
        return {WeightsAction.OFFLOAD: 1, WeightsAction.DISCARD: 2}.get(self.weights)

    @property
    def label(self) -> str:
        return f"{self.weights.value}+{self.process.value}"

    @classmethod
    def from_label(cls, label: str) -> EvictionPolicy:
        """Parse `weights+process`, the form used on command lines (`offload+keep_running`)."""
        weights, sep, process = label.partition("+")
        if not sep:
            raise PolicyError(f"policy {label!r} must look like WEIGHTS+PROCESS")
        return cls.parse(weights.strip(), process.strip())


SLEEP_LEVELS: dict[int, EvictionPolicy] = {
    1: EvictionPolicy(WeightsAction.OFFLOAD, ProcessAction.KEEP_RUNNING),
    2: EvictionPolicy(WeightsAction.DISCARD, ProcessAction.KEEP_RUNNING),
    3: EvictionPolicy(WeightsAction.RETAIN, ProcessAction.CUDA_SUSPEND),
    4: EvictionPolicy(WeightsAction.RETAIN, ProcessAction.CHECKPOINT),
    5: EvictionPolicy(WeightsAction.RETAIN, ProcessAction.STOP),
}
