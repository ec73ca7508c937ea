"""Which database column holds each config key, and how values cross between the two.

A spec value of None means "the default", stored as the field's default; the export turns
a stored default back into None, so a registry exported and imported again is unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models

from llmux_site.core.config import CheckpointSpec, PolicySpec
from models_app.models import EngineState

# Config key -> ModelDefinition field. `eviction` (two fields) and `aliases` (rows) are
# handled on their own.
MODEL_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "model_path": "model_path",
        "port": "port",
        "uds": "uds_path",
        "host": "host",
        "extra_args": "extra_args",
        "checkpoint_path": "checkpoint_path",
        "startup_timeout_secs": "startup_timeout_secs",
        "drain_timeout_secs": "drain_timeout_secs",
        "warmup": "warmup",
        "engine": "engine_kind",
        "gpu_ids": "gpu_ids",
        "env": "env",
        "command": "command",
        "served_model_name": "served_model_name",
        "probe": "probe",
        "rewrite_model": "rewrite_model",
        "description": "description",
        "priority": "priority",
        "enabled": "enabled",
        "unknown_keys": "unknown_keys",  # not a config key: the entry's unknown keys
    }
)

# Config path -> RegistryConfig field. `policy.sleep_level`/`policy.eviction` map onto
# default_weights + default_process; the form a file writes eviction in onto
# eviction_objects (plans.plan_settings).
SETTINGS_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "port": "port",
        "metrics_port": "metrics_port",
        "admin_port": "admin_port",
        "vllm_command": "vllm_command",
        "warmup": "warmup",
        "startup_timeout_secs": "startup_timeout_secs",
        **{f"policy.{key}": key for key in PolicySpec.__dataclass_fields__ if key != "eviction"},
        **{f"checkpoint.{key}": key for key in CheckpointSpec.__dataclass_fields__},
        "unknown_keys": "unknown_keys",  # not a config key: the file's unknown keys
    }
)

# States in which deleting the model row would orphan an engine process or its image.
LIVE_STATES = EngineState.with_process() | {EngineState.CHECKPOINTED}


def field_default(model: type[models.Model], name: str) -> Any:
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field):
        raise TypeError(f"{model.__name__}.{name} is not a column")
    return field.get_default()


def has_field(model: type[models.Model], name: str) -> bool:
    try:
        model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return True


def to_db(value: Any, model: type[models.Model], name: str) -> Any:
    """A spec value as stored: unset means the field's default; tuples become JSON lists."""
    if value is None:
        value = field_default(model, name)
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def from_db(value: Any, model: type[models.Model], name: str, *, keep: bool = False) -> Any:
    """A stored value as the spec holds it: the field's default means unset."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return MappingProxyType(dict(value))
    if not keep and value == field_default(model, name):
        return None
    return value
