"""The typed form of an llmux config file (specs), and the errors found reading one.

Shared by the parser (config), the writer (config_export) and the registry services; the
vocabulary (engines, policy types, the model name pattern) is models_app's, kept in step
by a test, since this package imports no Django.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, NamedTuple

from .eviction_policy import EvictionPolicy

# Kept equal to models_app's MODEL_NAME_RE (a test pins it): this package imports no Django.
MODEL_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
ENGINES: Final = ("vllm", "simulator", "generic")
POLICY_TYPES: Final = ("fifo", "cost_aware", "time_slice")
Format = Literal["json", "yaml"]
# How a file states eviction: llmux 0.5's `sleep_level`, or 0.6's `eviction{weights,
# process}`. llmux 0.6 and later ignore `sleep_level`, so an export keeps the file's form
# (config_compat.eviction_form).
EvictionForm = Literal["sleep_level", "eviction"]


class FieldError(NamedTuple):
    """One problem in a config file: where (a dotted field path) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class ConfigError(ValueError):
    """A config file that cannot be applied; `errors` holds every problem found."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.errors)
        head = f"invalid llmux config ({count} error{'s' if count != 1 else ''}):"
        return "\n".join([head, *(f"  {error}" for error in self.errors)])


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model as a config file describes it; `None` means "the registry default"."""

    name: str
    model_path: str
    port: int | None = None
    uds: str | None = None
    host: str | None = None
    eviction: EvictionPolicy | None = None
    extra_args: tuple[str, ...] = ()
    checkpoint_path: str | None = None
    startup_timeout_secs: int | None = None
    drain_timeout_secs: int | None = None
    warmup: bool | None = None
    aliases: tuple[str, ...] = ()
    engine: str | None = None
    gpu_ids: tuple[int, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    command: tuple[str, ...] = ()
    served_model_name: str | None = None
    # The readiness probe: a name (readiness.PROBE_KINDS) or, for a generic engine, an
    # object {path, body}; None picks one by the engine (docs/ENGINES.md).
    probe: str | Mapping[str, Any] | None = None
    rewrite_model: bool | None = None
    description: str | None = None
    priority: int | None = None
    enabled: bool | None = None
    # Keys llmux would ignore and this project does not know: kept for export.
    unknown_keys: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """The `policy` section: switch scheduling and the default eviction policy."""

    policy_type: str | None = None
    request_timeout_secs: int | None = None
    drain_before_switch: bool | None = None
    eviction: EvictionPolicy | None = None
    min_active_secs: int | None = None
    coalesce_window_ms: int | None = None
    amortization_factor: float | None = None
    max_wait_secs: int | None = None
    tick_interval_ms: int | None = None
    min_quantum_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CheckpointSpec:
    """The `checkpoint` section: CRIU and CUDA checkpoint tools and where images go."""

    criu_path: str | None = None
    cuda_plugin_dir: str | None = None
    images_dir: str | None = None
    cuda_checkpoint_path: str | None = None
    keep_images: bool | None = None


@dataclass(frozen=True, slots=True)
class RegistrySpec:
    """A whole config file: the models (sorted by name) and the registry-wide settings."""

    models: tuple[ModelSpec, ...] = ()
    port: int | None = None
    metrics_port: int | None = None
    admin_port: int | None = None
    vllm_command: str | None = None
    warmup: bool | None = None
    startup_timeout_secs: int | None = None
    policy: PolicySpec = PolicySpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    # Unknown keys of the top level, and of `policy` and `checkpoint` under those names.
    unknown_keys: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    eviction_form: EvictionForm | None = None  # the form an export writes (config_compat)
    # What a lenient parse read as llmux does, where --strict would refuse it.
    notices: tuple[FieldError, ...] = field(default=(), compare=False)

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise KeyError(name)
