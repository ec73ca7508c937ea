"""Create, change or delete one model, validated exactly as an import of it is.

The REST API's and the dashboard's definition writes. The entry is parsed as a config
file holding the registry's settings and this one model, then checked by the import's own
rules (fields, paths under LLMUX_PATH_ROOTS, reserved ports, clashes with the other
models, what only an administrator may set) and refused what only `llmux_import --strict`
refuses (a new unknown key); only this model's rows are written.
"""

from __future__ import annotations

from django.db import transaction

from llmux_site.core.config import (
    ConfigError,
    FieldError,
    ModelSpec,
    RegistrySpec,
    config_document,
    key_path,
    parse_config,
)
from models_app.models import ModelDefinition
from models_app.services import engine_rules
from models_app.services.registry.exporter import model_spec, settings_spec
from models_app.services.registry.plans import plan_model, write_models
from models_app.services.registry.problems import database_conflicts, field_errors, unprunable
from models_app.services.registry.report import ModelOutcome


def save_model(name: str, entry: object, *, restricted: bool) -> ModelOutcome:
    """Make model `name` (new or not) hold `entry`, its config file entry; ConfigError
    lists every problem and nothing is written. `restricted`: a non-administrator's
    change, refused what only an administrator decides."""
    with transaction.atomic():
        # Every row locked, as an import locks them: two edits cannot both take one port.
        existing = {
            m.name: m
            for m in ModelDefinition.objects.select_for_update().prefetch_related("aliases")
        }
        settings = settings_spec()
        document = {**config_document(settings), "models": {name: entry}}
        parsed = parse_config(document)
        spec = parsed.model(name)
        current = existing.get(name)
        before = model_spec(current) if current is not None else None  # before the plan
        plan = plan_model(spec, current)
        others = [other for other in existing if other != name]
        # A clash with another model is refused on its own, as an import's parse refuses
        # a file whose models clash, before the checks of the model's own values.
        clashes = database_conflicts([spec], existing, others, note="")
        if clashes:
            raise ConfigError(clashes)
        errors = _lenient_reads(parsed, spec, before)
        errors += field_errors([plan], None) + engine_rules.port_errors([spec])
        if restricted and plan.action != "unchanged":
            command = settings.vllm_command  # unchanged: an edit of one model keeps it
            errors += engine_rules.added_privileges(
                spec, before, new_command=command, old_command=command
            )
        if errors:
            raise ConfigError(errors)
        write_models([plan])
    return ModelOutcome(spec.name, plan.action, tuple(plan.changes))


def _lenient_reads(
    parsed: RegistrySpec, spec: ModelSpec, before: ModelSpec | None
) -> list[FieldError]:
    """What a command-line import keeps with a notice but an edit refuses: an unknown key
    the model does not hold already (a typo, most likely: an imported one may stay), and a
    value read as llmux reads it (a sleep_level outside 1-5)."""
    held = set(before.unknown_keys) if before is not None else set()
    where = key_path("models", spec.name)
    errors = [
        FieldError(key_path(where, key), "unknown field")
        for key in spec.unknown_keys
        if key not in held
    ]
    # The document holds this one model: every notice under `models` is about its entry.
    return errors + [notice for notice in parsed.notices if notice.path.startswith("models")]


def delete_model(name: str) -> None:
    """Delete model `name` with its runtime row and aliases (its history keeps its name);
    ConfigError while its engine runs or holds a checkpoint image."""
    with transaction.atomic():
        ModelDefinition.objects.select_for_update().filter(name=name).first()
        errors = unprunable([name])
        if errors:
            raise ConfigError(errors)
        write_models([], prune=[name])
