"""Apply a whole llmux config spec to the registry tables (`llmux_import`, `llmux serve`).

An import is declarative: after it, every model in the file and the registry settings hold
exactly what the file says, with keys the file leaves out at the model fields' defaults. Rows
are updated in place (primary keys, runtime state and history stay attached). Models in the
database but absent from the file are kept unless `prune` is given. What the file holds
that this llmux does not use or know is kept and reported once (config_compat).
"""

from __future__ import annotations

from django.db import transaction

from llmux_site.core.config import ConfigError, RegistrySpec
from llmux_site.core.config_compat import import_notes
from models_app.models import ModelDefinition, RegistryConfig
from models_app.services import engine_rules
from models_app.services.engines import sleep_mode_warning
from models_app.services.registry.exporter import export_registry
from models_app.services.registry.plans import ModelPlan, plan_model, plan_settings, write_models
from models_app.services.registry.problems import (
    database_conflicts,
    field_errors,
    running_engine_warnings,
    unprunable,
)
from models_app.services.registry.report import FieldChange, ImportReport, ModelOutcome


def apply_registry(
    spec: RegistrySpec,
    *,
    dry_run: bool = False,
    prune: bool = False,
    restricted: bool = False,
    confine_paths: bool = True,
) -> ImportReport:
    """Make the registry match `spec` in one transaction; on any error nothing is written.
    `restricted`: a non-administrator's change, refused what only an administrator decides.
    `confine_paths` False: an administrator's file from the command line, whose paths may
    lie outside LLMUX_PATH_ROOTS (docs/CONFIG.md, "Who may set what")."""
    with transaction.atomic():
        existing = {
            m.name: m
            for m in ModelDefinition.objects.select_for_update().prefetch_related("aliases")
        }
        before = export_registry() if restricted else None
        absent = sorted(set(existing) - {m.name for m in spec.models})
        errors = database_conflicts(spec.models, existing, absent if not prune else [])
        if prune:
            errors += unprunable(absent)
        plans = [plan_model(model, existing.get(model.name)) for model in spec.models]
        settings, settings_changes, warnings = plan_settings(spec)
        confine = confine_paths or restricted
        errors += field_errors(plans, settings, confine=confine)
        errors += engine_rules.port_errors(spec.models)
        if before is not None:
            changed = [plan.spec for plan in plans if plan.action != "unchanged"]
            keys = [change.key for change in settings_changes]
            errors += engine_rules.restricted_errors(spec, changed, before, keys)
        if errors:
            raise ConfigError(errors)
        warnings = import_notes(spec) + warnings + _plan_warnings(plans, settings)
        if not dry_run:
            write_models(plans, prune=absent if prune else None)
            if settings_changes or settings._state.adding:
                settings.save()
    return _report(plans, absent, settings_changes, warnings, dry_run=dry_run, prune=prune)


def _plan_warnings(plans: list[ModelPlan], settings: RegistryConfig) -> list[str]:
    warnings = running_engine_warnings(plans)
    # Only a warning: a registry may describe models for other hosts.
    return warnings + [w for plan in plans if (w := sleep_mode_warning(plan.obj, settings))]


def _report(
    plans: list[ModelPlan],
    absent: list[str],
    settings_changes: list[FieldChange],
    warnings: list[str],
    *,
    dry_run: bool,
    prune: bool,
) -> ImportReport:
    outcomes = [ModelOutcome(p.spec.name, p.action, tuple(p.changes)) for p in plans]
    outcomes += [ModelOutcome(name, "removed" if prune else "kept") for name in absent]
    return ImportReport(
        models=tuple(sorted(outcomes, key=lambda o: o.name)),
        settings_changes=tuple(settings_changes),
        dry_run=dry_run,
        warnings=tuple(warnings),
    )
