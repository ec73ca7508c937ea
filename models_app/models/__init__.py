"""Registry, runtime and history models."""

from .activity import ActivitySettings, LiveRequests, RequestRecord
from .audit import AuditEntry, AuditResult
from .choices import (
    BringUp,
    EngineKind,
    EngineState,
    MemoryCheck,
    Mode,
    OperationKind,
    PolicyType,
    Process,
    SwapOutcome,
    SwapTrigger,
    Verdict,
    Weights,
)
from .coordination import (
    OPEN_SWITCH_STATUSES,
    GroupLease,
    SwitchRequest,
    SwitchStatus,
    WebInstance,
)
from .definitions import ModelAlias, ModelDefinition, Node, RegistryConfig
from .keys import ApiKey, KeyKind
from .logins import LoginFailures
from .runtime import EngineRuntime
from .swaps import PHASES, SwapEvent
from .tokens import ApiToken
from .validation import ValidationRun

__all__ = [
    "OPEN_SWITCH_STATUSES",
    "PHASES",
    "ActivitySettings",
    "ApiKey",
    "ApiToken",
    "AuditEntry",
    "AuditResult",
    "BringUp",
    "EngineKind",
    "EngineRuntime",
    "EngineState",
    "GroupLease",
    "KeyKind",
    "LiveRequests",
    "LoginFailures",
    "MemoryCheck",
    "Mode",
    "ModelAlias",
    "ModelDefinition",
    "Node",
    "OperationKind",
    "PolicyType",
    "Process",
    "RegistryConfig",
    "RequestRecord",
    "SwapEvent",
    "SwapOutcome",
    "SwapTrigger",
    "SwitchRequest",
    "SwitchStatus",
    "ValidationRun",
    "Verdict",
    "WebInstance",
    "Weights",
]
