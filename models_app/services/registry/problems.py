"""What is wrong with a planned registry write, as config errors with their field paths.

The rules an import and a one-model edit share: the fields' own validation, paths under
LLMUX_PATH_ROOTS (but for a command-line import), no clash with the models the write
leaves in the database, and no deletion that would orphan an engine process or its image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.core.exceptions import ValidationError
from django.db import models

from llmux_site.core.config import FieldError, ModelSpec
from models_app.models import EngineRuntime, ModelDefinition, RegistryConfig
from models_app.services import paths
from models_app.services.registry.columns import LIVE_STATES, MODEL_FIELDS, SETTINGS_FIELDS
from models_app.services.registry.plans import ModelPlan

# After a clash with a model an import leaves in the database (a one-model edit has no file).
IMPORT_NOTE = " (in the database, not in this file; remove it or use --prune)"


def database_conflicts(
    specs: Iterable[ModelSpec],
    existing: Mapping[str, ModelDefinition],
    kept: Iterable[str],
    *,
    note: str = IMPORT_NOTE,
) -> list[FieldError]:
    """Clashes between the written models and models the write leaves in the database."""
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
    errors: list[FieldError] = []
    for spec in specs:
        path = f"models.{spec.name}"
        if spec.name in taken:
            errors.append(FieldError(path, f"name is already {taken[spec.name]}{note}"))
        for index, alias in enumerate(spec.aliases):
            if alias in taken:
                errors.append(
                    FieldError(
                        f"{path}.aliases[{index}]", f"{alias!r} is already {taken[alias]}{note}"
                    )
                )
        if spec.port in ports:
            errors.append(
                FieldError(
                    f"{path}.port", f"{spec.port} is already used by model {ports[spec.port]}{note}"
                )
            )
        if spec.uds in sockets:
            errors.append(
                FieldError(
                    f"{path}.uds", f"{spec.uds} is already used by model {sockets[spec.uds]}{note}"
                )
            )
    return errors


def unprunable(names: list[str]) -> list[FieldError]:
    """Pruning must not orphan a running engine or a checkpoint image's process."""
    live = EngineRuntime.objects.filter(model__name__in=names, state__in=sorted(LIVE_STATES))
    return [
        FieldError(
            f"models.{runtime.model.name}",
            f"cannot prune: its engine is {runtime.state}; stop it first",
        )
        for runtime in live.select_related("model")
    ]


# A model's path-valued keys, their columns, and whether the value may also be a name.
_MODEL_PATHS = (
    ("uds", "uds_path", False),
    ("checkpoint_path", "checkpoint_path", False),
    ("model_path", "model_path", True),
)


def _path_errors(
    plans: list[ModelPlan], settings: RegistryConfig | None, *, confine: bool
) -> list[FieldError]:
    """The paths a write sets: under LLMUX_PATH_ROOTS when `confine` (services.paths), else
    only absolute (an administrator's file from the command line). A model's path that the
    write leaves as it is stays, wherever it points: an administrator set it."""
    checks = [(settings.images_dir, "checkpoint.images_dir", False)] if settings else []
    for plan in plans:
        changed = {change.key for change in plan.changes}
        checks += [
            (getattr(plan.obj, column), f"models.{plan.spec.name}.{key}", loose)
            for key, column, loose in _MODEL_PATHS
            if plan.action == "created" or key in changed
        ]
    check = paths.confine if confine else paths.absolute
    found = [check(value, where, path_like_only=loose) for value, where, loose in checks]
    return [error for error in found if error is not None]


def field_errors(
    plans: list[ModelPlan], settings: RegistryConfig | None, *, confine: bool = True
) -> list[FieldError]:
    """The fields' own validation (lengths, choices, paths), mapped back to config paths;
    `settings` None: a write that leaves the registry settings as they are; `confine`:
    paths under LLMUX_PATH_ROOTS (every write but a command-line import)."""
    errors: list[FieldError] = _path_errors(plans, settings, confine=confine)
    to_key = {field: key for key, field in MODEL_FIELDS.items()}
    for plan in plans:
        errors += _validate(plan.obj, f"models.{plan.spec.name}", to_key)
    if settings is None:
        return errors
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


def running_engine_warnings(plans: list[ModelPlan]) -> list[str]:
    changed = [p.obj.pk for p in plans if p.action == "updated"]
    running = EngineRuntime.objects.filter(
        model__in=changed, state__in=sorted(LIVE_STATES)
    ).select_related("model")
    return [
        f"{runtime.model.name}: engine is {runtime.state}; changes apply when it next starts"
        for runtime in running
    ]
