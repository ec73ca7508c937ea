"""Plans of a registry write: each model's and the settings' new values, then the write.

A plan holds the row with its new values set but not saved, and the changes key by key,
so a write is validated whole (registry.problems) before anything is saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmux_site.core.config import ModelSpec, RegistrySpec
from models_app import protocol
from models_app.models import ModelAlias, ModelDefinition, RegistryConfig
from models_app.services.registry.columns import (
    MODEL_FIELDS,
    SETTINGS_FIELDS,
    field_default,
    has_field,
    to_db,
)
from models_app.services.registry.report import Action, FieldChange


@dataclass(slots=True)
class ModelPlan:
    """One model of a write: its row with the new values set, and what changes."""

    spec: ModelSpec
    obj: ModelDefinition
    action: Action
    changes: list[FieldChange]
    aliases: set[str]
    stale_aliases: set[str]


def _eviction_label(weights: str, process: str) -> str | None:
    return f"{weights}+{process}" if weights else None


def plan_model(spec: ModelSpec, current: ModelDefinition | None) -> ModelPlan:
    obj = current if current is not None else ModelDefinition(name=spec.name)
    changes: list[FieldChange] = []
    for key, name in MODEL_FIELDS.items():
        new = to_db(getattr(spec, key), ModelDefinition, name)
        old = getattr(obj, name)
        if old != new or isinstance(old, bool) != isinstance(new, bool):
            changes.append(FieldChange(key, old, new))
            setattr(obj, name, new)
    eviction = spec.eviction
    new_pair = (eviction.weights.value, eviction.process.value) if eviction else ("", "")
    old_pair = (obj.eviction_weights, obj.eviction_process)
    if new_pair != old_pair:
        changes.append(
            FieldChange("eviction", _eviction_label(*old_pair), _eviction_label(*new_pair))
        )
        obj.eviction_weights, obj.eviction_process = new_pair
    old_aliases = {a.name for a in obj.aliases.all()} if current is not None else set()
    if old_aliases != set(spec.aliases):
        changes.append(FieldChange("aliases", sorted(old_aliases), sorted(spec.aliases)))
    action: Action = "created" if current is None else ("updated" if changes else "unchanged")
    return ModelPlan(
        spec=spec,
        obj=obj,
        action=action,
        changes=changes if current is not None else [],
        aliases=set(spec.aliases),
        stale_aliases=old_aliases - set(spec.aliases),
    )


def _settings_value(spec: RegistrySpec, path: str) -> Any:
    section, _, key = path.rpartition(".")
    holder: Any = getattr(spec, section) if section else spec
    return getattr(holder, key)


def plan_settings(spec: RegistrySpec) -> tuple[RegistryConfig, list[FieldChange], list[str]]:
    """The settings row with `spec`'s values set, what changes, and keys not stored."""
    obj = RegistryConfig.current()
    changes: list[FieldChange] = []
    warnings: list[str] = []
    for path, name in SETTINGS_FIELDS.items():
        value = _settings_value(spec, path)
        if not has_field(RegistryConfig, name):
            if value is not None:
                warnings.append(f"{path} is accepted but not stored (no database column yet)")
            continue
        new, old = to_db(value, RegistryConfig, name), getattr(obj, name)
        if old != new:
            changes.append(FieldChange(path, old, new))
            setattr(obj, name, new)
    eviction = spec.policy.eviction
    new_pair = (
        (eviction.weights.value, eviction.process.value)
        if eviction is not None
        else (
            field_default(RegistryConfig, "default_weights"),
            field_default(RegistryConfig, "default_process"),
        )
    )
    old_pair = (obj.default_weights, obj.default_process)
    if new_pair != old_pair:
        changes.append(FieldChange("policy.eviction", "+".join(old_pair), "+".join(new_pair)))
        obj.default_weights, obj.default_process = new_pair
    return obj, changes + _eviction_form_change(spec, obj), warnings


def _eviction_form_change(spec: RegistrySpec, obj: RegistryConfig) -> list[FieldChange]:
    """The form an export writes eviction in, as the file wrote it; a file that does not
    tell (no policy that a sleep_level names) leaves it as it was."""
    if spec.eviction_form is None:
        return []
    objects = spec.eviction_form == "eviction"
    if objects == obj.eviction_objects:
        return []
    obj.eviction_objects = objects
    forms = ["sleep_level", "eviction"]
    return [FieldChange("eviction form", forms[not objects], forms[objects])]


def write_models(plans: list[ModelPlan], *, prune: list[str] | None = None) -> None:
    """Save the planned models (and delete the `prune`d ones); web processes hear of it."""
    # Deletions first, so a name, port or alias can move between models in one write.
    if prune:
        ModelDefinition.objects.filter(name__in=prune).delete()
    for plan in plans:
        if plan.stale_aliases:
            ModelAlias.objects.filter(model=plan.obj, name__in=plan.stale_aliases).delete()
    for plan in plans:
        if plan.action != "unchanged":
            plan.obj.save()
    current = set(ModelAlias.objects.values_list("name", flat=True))
    ModelAlias.objects.bulk_create(
        ModelAlias(model=plan.obj, name=alias)
        for plan in plans
        for alias in sorted(plan.aliases - current)
    )
    protocol.after_commit(protocol.RegistryChanged())  # deletes, bulk inserts: no signal
