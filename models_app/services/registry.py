"""Apply an llmux config spec to the registry tables, and export them back as a spec.

An import is declarative: after it, every model in the file and the registry settings hold
exactly what the file says, with keys the file leaves out at the model fields' defaults. Rows
are updated in place (primary keys, runtime state and history stay attached). Models in the
database but absent from the file are kept unless `prune` is given.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models, transaction

from llmux_site.core.config import (
    CheckpointSpec,
    ConfigError,
    FieldError,
    ModelSpec,
    PolicySpec,
    RegistrySpec,
)
from llmux_site.core.policy import EvictionPolicy, ProcessAction, WeightsAction
from models_app.models import (
    EngineRuntime,
    EngineState,
    ModelAlias,
    ModelDefinition,
    RegistryConfig,
)
from models_app.services import engine_rules, notify, paths
from models_app.services.engines import sleep_mode_warning

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
    }
)

# Config path -> RegistryConfig field. `policy.sleep_level`/`policy.eviction` map onto
# default_weights + default_process.
SETTINGS_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "port": "port",
        "metrics_port": "metrics_port",
        "admin_port": "admin_port",
        "vllm_command": "vllm_command",
        "warmup": "warmup",
        **{f"policy.{key}": key for key in PolicySpec.__dataclass_fields__ if key != "eviction"},
        **{f"checkpoint.{key}": key for key in CheckpointSpec.__dataclass_fields__},
    }
)

# States in which deleting the model row would orphan an engine process or its image.
_LIVE_STATES = EngineState.with_process() | {EngineState.CHECKPOINTED}

Action = Literal["created", "updated", "unchanged", "kept", "removed"]


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One config key whose stored value an import changes (or would change)."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"


@dataclass(frozen=True, slots=True)
class ModelOutcome:
    """What an import does to one model."""

    name: str
    action: Action
    changes: tuple[FieldChange, ...] = ()


@dataclass(frozen=True, slots=True)
class ImportReport:
    """Everything an import did, or would do on a dry run."""

    models: tuple[ModelOutcome, ...]
    settings_changes: tuple[FieldChange, ...]
    dry_run: bool
    warnings: tuple[str, ...] = ()

    def names(self, action: Action) -> list[str]:
        return [m.name for m in self.models if m.action == action]

    def outcome(self, name: str) -> ModelOutcome:
        return next(m for m in self.models if m.name == name)

    @property
    def absent(self) -> list[str]:
        """Models in the database but not in the file (kept, or removed with prune)."""
        return [m.name for m in self.models if m.action in ("kept", "removed")]

    @property
    def changed(self) -> bool:
        actions = {m.action for m in self.models}
        return bool(self.settings_changes) or bool(actions & {"created", "updated", "removed"})

    def lines(self) -> list[str]:
        out = [_outcome_line(m) for m in self.models]
        out += [f"settings  {change}" for change in self.settings_changes]
        if not self.settings_changes:
            out.append("settings  unchanged")
        out += [f"warning   {w}" for w in self.warnings]
        actions: tuple[Action, ...] = ("created", "updated", "unchanged", "removed")
        counts = ", ".join(f"{len(self.names(a))} {a}" for a in actions)
        kept = self.names("kept")
        tail = f", {len(kept)} absent from the file and kept (--prune removes them)" if kept else ""
        suffix = " (dry run: nothing was written)" if self.dry_run else ""
        return [*out, f"models: {counts}{tail}{suffix}"]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _outcome_line(outcome: ModelOutcome) -> str:
    head = f"{outcome.action:<9} {outcome.name}"
    if outcome.action == "kept":
        head += " (in the database, not in the file)"
    return "\n".join([head, *(f"            {change}" for change in outcome.changes)])


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value, ensure_ascii=False, default=str)


# --- import ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _ModelPlan:
    spec: ModelSpec
    obj: ModelDefinition
    action: Action
    changes: list[FieldChange]
    aliases: set[str]
    stale_aliases: set[str]


def apply_registry(
    spec: RegistrySpec, *, dry_run: bool = False, prune: bool = False, restricted: bool = False
) -> ImportReport:
    """Make the registry match `spec` in one transaction; on any error nothing is written.
    `restricted`: a non-administrator's change, refused what only an administrator decides."""
    with transaction.atomic():
        existing = {
            m.name: m
            for m in ModelDefinition.objects.select_for_update().prefetch_related("aliases")
        }
        before = export_registry() if restricted else None
        absent = sorted(set(existing) - {m.name for m in spec.models})
        errors = _database_conflicts(spec, existing, absent if not prune else [])
        if prune:
            errors += _unprunable(absent)
        plans = [_plan_model(model, existing.get(model.name)) for model in spec.models]
        settings, settings_changes, warnings = _plan_settings(spec)
        errors += _field_errors(plans, settings) + engine_rules.port_errors(spec.models)
        if before is not None:
            changed = [plan.spec for plan in plans if plan.action != "unchanged"]
            keys = [change.key for change in settings_changes]
            errors += engine_rules.restricted_errors(spec, changed, before, keys)
        if errors:
            raise ConfigError(errors)
        warnings += _running_engine_warnings(plans)
        # Only a warning: a registry may describe models for other hosts.
        warnings += [w for plan in plans if (w := sleep_mode_warning(plan.obj, settings))]
        if not dry_run:
            _write(
                plans,
                settings,
                settings_changed=bool(settings_changes),
                prune=absent if prune else [],
            )
    outcomes = [ModelOutcome(p.spec.name, p.action, tuple(p.changes)) for p in plans]
    outcomes += [ModelOutcome(name, "removed" if prune else "kept") for name in absent]
    return ImportReport(
        models=tuple(sorted(outcomes, key=lambda o: o.name)),
        settings_changes=tuple(settings_changes),
        dry_run=dry_run,
        warnings=tuple(warnings),
    )


def _field_default(model: type[models.Model], name: str) -> Any:
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field):
        raise TypeError(f"{model.__name__}.{name} is not a column")
    return field.get_default()


def _to_db(value: Any, model: type[models.Model], name: str) -> Any:
    """A spec value as stored: unset means the field's default; tuples become JSON lists."""
    if value is None:
        value = _field_default(model, name)
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _eviction_label(weights: str, process: str) -> str | None:
    return f"{weights}+{process}" if weights else None


def _plan_model(spec: ModelSpec, current: ModelDefinition | None) -> _ModelPlan:
    obj = current if current is not None else ModelDefinition(name=spec.name)
    changes: list[FieldChange] = []
    for key, name in MODEL_FIELDS.items():
        new = _to_db(getattr(spec, key), ModelDefinition, name)
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
    return _ModelPlan(
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


def _has_field(model: type[models.Model], name: str) -> bool:
    try:
        model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return True


def _plan_settings(spec: RegistrySpec) -> tuple[RegistryConfig, list[FieldChange], list[str]]:
    obj = RegistryConfig.objects.filter(pk=RegistryConfig.SINGLETON_PK).first()
    obj = obj if obj is not None else RegistryConfig(pk=RegistryConfig.SINGLETON_PK)
    changes: list[FieldChange] = []
    warnings: list[str] = []
    for path, name in SETTINGS_FIELDS.items():
        value = _settings_value(spec, path)
        if not _has_field(RegistryConfig, name):
            if value is not None:
                warnings.append(f"{path} is accepted but not stored (no database column yet)")
            continue
        new, old = _to_db(value, RegistryConfig, name), getattr(obj, name)
        if old != new:
            changes.append(FieldChange(path, old, new))
            setattr(obj, name, new)
    eviction = spec.policy.eviction
    new_pair = (
        (eviction.weights.value, eviction.process.value)
        if eviction is not None
        else (
            _field_default(RegistryConfig, "default_weights"),
            _field_default(RegistryConfig, "default_process"),
        )
    )
    old_pair = (obj.default_weights, obj.default_process)
    if new_pair != old_pair:
        changes.append(FieldChange("policy.eviction", "+".join(old_pair), "+".join(new_pair)))
        obj.default_weights, obj.default_process = new_pair
    return obj, changes, warnings


def _database_conflicts(
    spec: RegistrySpec, existing: Mapping[str, ModelDefinition], kept: Iterable[str]
) -> list[FieldError]:
    """Clashes between the file's models and models the import leaves in the database."""
    taken: dict[str, str] = {}
    ports: dict[int, str] = {}
    sockets: dict[str, str] = {}
    for name in kept:
        model = existing[name]
        taken[name] = f"the name of model {name}"
        taken.update({a.name: f"an alias of model {name}" for a in model.aliases.all()})
        if model.port is not None:
            ports[model.port] = name
        if model.uds_path:
            sockets[model.uds_path] = name
    note = " (in the database, not in this file; remove it or use --prune)"
    errors: list[FieldError] = []
    for model_spec in spec.models:
        path = f"models.{model_spec.name}"
        if model_spec.name in taken:
            errors.append(FieldError(path, f"name is already {taken[model_spec.name]}{note}"))
        for index, alias in enumerate(model_spec.aliases):
            if alias in taken:
                errors.append(
                    FieldError(
                        f"{path}.aliases[{index}]", f"{alias!r} is already {taken[alias]}{note}"
                    )
                )
        if model_spec.port in ports:
            errors.append(
                FieldError(
                    f"{path}.port",
                    f"{model_spec.port} is already used by model {ports[model_spec.port]}{note}",
                )
            )
        if model_spec.uds in sockets:
            errors.append(
                FieldError(
                    f"{path}.uds",
                    f"{model_spec.uds} is already used by model {sockets[model_spec.uds]}{note}",
                )
            )
    return errors


def _unprunable(names: list[str]) -> list[FieldError]:
    """Pruning must not orphan a running engine or a checkpoint image's process."""
    live = EngineRuntime.objects.filter(model__name__in=names, state__in=sorted(_LIVE_STATES))
    return [
        FieldError(
            f"models.{runtime.model.name}",
            f"cannot prune: its engine is {runtime.state}; stop it first",
        )
        for runtime in live.select_related("model")
    ]


def _path_errors(plans: list[_ModelPlan], settings: RegistryConfig) -> list[FieldError]:
    """Every filesystem path normalised and under LLMUX_PATH_ROOTS (services.paths)."""
    checks = [(settings.images_dir, "checkpoint.images_dir", False)]
    for plan in plans:
        where = f"models.{plan.spec.name}"
        checks += [
            (plan.obj.uds_path, f"{where}.uds", False),
            (plan.obj.checkpoint_path, f"{where}.checkpoint_path", False),
            (plan.obj.model_path, f"{where}.model_path", True),
        ]
    found = [paths.confine(value, where, path_like_only=loose) for value, where, loose in checks]
    return [error for error in found if error is not None]


def _field_errors(plans: list[_ModelPlan], settings: RegistryConfig) -> list[FieldError]:
    """The model fields' own validation (lengths, choices), mapped back to config paths."""
    errors: list[FieldError] = _path_errors(plans, settings)
    to_key = {field: key for key, field in MODEL_FIELDS.items()}
    for plan in plans:
        errors += _validate(plan.obj, f"models.{plan.spec.name}", to_key)
    to_path = {field: path for path, field in SETTINGS_FIELDS.items()}
    return errors + _validate(settings, "", to_path)


def _validate(obj: models.Model, prefix: str, to_key: Mapping[str, str]) -> list[FieldError]:
    try:
        obj.clean_fields(exclude=["node", "pinned_model"])
    except ValidationError as exc:
        return [
            FieldError(".".join(p for p in (prefix, to_key.get(field, field)) if p), message)
            for field, messages in exc.message_dict.items()
            for message in messages
        ]
    return []


def _running_engine_warnings(plans: list[_ModelPlan]) -> list[str]:
    changed = [p.obj.pk for p in plans if p.action == "updated"]
    running = EngineRuntime.objects.filter(
        model__in=changed, state__in=sorted(_LIVE_STATES)
    ).select_related("model")
    return [
        f"{runtime.model.name}: engine is {runtime.state}; changes apply when it next starts"
        for runtime in running
    ]


def _write(
    plans: list[_ModelPlan], settings: RegistryConfig, *, settings_changed: bool, prune: list[str]
) -> None:
    # Deletions first, so a name, port or alias can move between models in one import.
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
    if settings_changed or settings._state.adding:
        settings.save()
    notify.registry_changed()  # deletes and bulk inserts send no signal


# --- export ----------------------------------------------------------------------------------


def _from_db(value: Any, model: type[models.Model], name: str, *, keep: bool = False) -> Any:
    """A stored value as the spec holds it: the field's default means unset."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return MappingProxyType(dict(value))
    if not keep and value == _field_default(model, name):
        return None
    return value


def _model_spec(obj: ModelDefinition) -> ModelSpec:
    values = {
        key: _from_db(getattr(obj, name), ModelDefinition, name, keep=key == "model_path")
        for key, name in MODEL_FIELDS.items()
    }
    return ModelSpec(
        name=obj.name,
        eviction=obj.eviction_override(),
        aliases=tuple(sorted(a.name for a in obj.aliases.all())),
        **values,
    )


def _settings_spec(obj: RegistryConfig) -> dict[str, Any]:
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {"policy": {}, "checkpoint": {}}
    for path, name in SETTINGS_FIELDS.items():
        if not _has_field(RegistryConfig, name):
            continue
        section, _, key = path.rpartition(".")
        (sections[section] if section else top)[key] = _from_db(
            getattr(obj, name), RegistryConfig, name
        )
    default = EvictionPolicy(
        WeightsAction(_field_default(RegistryConfig, "default_weights")),
        ProcessAction(_field_default(RegistryConfig, "default_process")),
    )
    eviction = obj.default_eviction()
    sections["policy"]["eviction"] = eviction if eviction != default else None
    return {
        **top,
        "policy": PolicySpec(**sections["policy"]),
        "checkpoint": CheckpointSpec(**sections["checkpoint"]),
    }


def export_registry() -> RegistrySpec:
    """The registry as a spec: models by name, unset where a field holds its default."""
    settings = RegistryConfig.objects.filter(pk=RegistryConfig.SINGLETON_PK).first()
    queryset = ModelDefinition.objects.prefetch_related("aliases").order_by("name")
    return RegistrySpec(
        models=tuple(_model_spec(obj) for obj in queryset),
        **_settings_spec(settings if settings is not None else RegistryConfig()),
    )
