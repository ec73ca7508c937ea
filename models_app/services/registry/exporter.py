"""The registry tables read back as an llmux config spec (`llmux_export`, the API's
definitions, the dashboard's definition editor). Reads only: nothing here inserts."""

from __future__ import annotations

from typing import Any

from llmux_site.core.config import (
    CheckpointSpec,
    ModelSpec,
    PolicySpec,
    RegistrySpec,
    config_document,
)
from llmux_site.core.config_specs import EvictionForm
from llmux_site.core.eviction_policy import EvictionPolicy, ProcessAction, WeightsAction
from models_app.models import ModelDefinition, RegistryConfig
from models_app.services.registry.columns import (
    MODEL_FIELDS,
    SETTINGS_FIELDS,
    field_default,
    from_db,
    has_field,
)


def model_spec(obj: ModelDefinition) -> ModelSpec:
    """One model as a config file describes it (unset where a field holds its default)."""
    values = {
        key: from_db(getattr(obj, name), ModelDefinition, name, keep=key == "model_path")
        for key, name in MODEL_FIELDS.items()
    }
    return ModelSpec(
        name=obj.name,
        eviction=obj.eviction_override(),
        aliases=tuple(sorted(a.name for a in obj.aliases.all())),
        **values,
    )


def model_entry(obj: ModelDefinition) -> dict[str, Any]:
    """One model's entry as it stands under `models` in an exported config file."""
    objects = RegistryConfig.objects.values_list("eviction_objects", flat=True).first()
    spec = RegistrySpec(models=(model_spec(obj),), eviction_form=_form(bool(objects)))
    return dict(config_document(spec)["models"][obj.name])


def _form(eviction_objects: bool) -> EvictionForm:
    return "eviction" if eviction_objects else "sleep_level"


def _settings_spec(obj: RegistryConfig) -> dict[str, Any]:
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {"policy": {}, "checkpoint": {}}
    for path, name in SETTINGS_FIELDS.items():
        if not has_field(RegistryConfig, name):
            continue
        section, _, key = path.rpartition(".")
        (sections[section] if section else top)[key] = from_db(
            getattr(obj, name), RegistryConfig, name
        )
    default = EvictionPolicy(
        WeightsAction(field_default(RegistryConfig, "default_weights")),
        ProcessAction(field_default(RegistryConfig, "default_process")),
    )
    eviction = obj.default_eviction()
    sections["policy"]["eviction"] = eviction if eviction != default else None
    return {
        **top,
        "eviction_form": _form(obj.eviction_objects),
        "policy": PolicySpec(**sections["policy"]),
        "checkpoint": CheckpointSpec(**sections["checkpoint"]),
    }


def settings_spec() -> RegistrySpec:
    """The registry-wide settings as a spec without models."""
    return RegistrySpec(**_settings_spec(RegistryConfig.current()))


def export_registry() -> RegistrySpec:
    """The registry as a spec: models by name, unset where a field holds its default."""
    queryset = ModelDefinition.objects.prefetch_related("aliases").order_by("name")
    return RegistrySpec(
        models=tuple(model_spec(obj) for obj in queryset),
        **_settings_spec(RegistryConfig.current()),
    )
