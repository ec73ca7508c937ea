"""Registry, runtime and history models."""

from .choices import (
    BringUp,
    EngineKind,
    EngineState,
    Mode,
    PolicyType,
    Process,
    SwapOutcome,
    SwapTrigger,
    Weights,
)
from .definitions import ModelAlias, ModelDefinition, Node, RegistryConfig
from .runtime import EngineRuntime
from .swaps import PHASES, SwapEvent

__all__ = [
    "PHASES",
    "BringUp",
    "EngineKind",
    "EngineRuntime",
    "EngineState",
    "Mode",
    "ModelAlias",
    "ModelDefinition",
    "Node",
    "PolicyType",
    "Process",
    "RegistryConfig",
    "SwapEvent",
    "SwapOutcome",
    "SwapTrigger",
    "Weights",
]
