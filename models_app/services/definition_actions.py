"""Operator actions on definitions: models, eviction overrides and gateway API keys.

Shared by the REST API and the dashboard, audited like every action (services.acting).
A model is created, changed or deleted through services.registry.model_edits, validated
exactly as an import of it is, and only that model is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from llmux_site.core.config import ConfigError
from llmux_site.core.eviction_policy import EvictionPolicy
from models_app.models import ApiKey, AuditResult, ModelDefinition, SwapTrigger
from models_app.roles import role_of
from models_app.services import api_keys, control
from models_app.services.acting import (
    Acting,
    ActionError,
    Outcome,
    StateError,
    audited,
    model_named,
)
from models_app.services.registry import delete_model, model_entry, save_model


class InvalidDefinition(ActionError):
    """A definition the registry refuses; `errors` lists each problem with its field path."""

    def __init__(self, exc: ConfigError) -> None:
        super().__init__(str(exc))
        self.errors = [str(error) for error in exc.errors] or [str(exc)]


class NameTaken(StateError):
    """A model of that name exists already."""


def _saved(acting: Acting, name: str, entry: object) -> Outcome:
    try:
        outcome = save_model(name, entry, restricted=role_of(acting.user) != "admin")
    except ConfigError as exc:
        raise InvalidDefinition(exc) from None
    return Outcome(f"{name} saved" + ("" if outcome.changes else " (no change)"))


def _quiet(outcome: Outcome, acting: Acting) -> Outcome:
    """The REST API answers a definition write with the definition itself and audits it
    with no detail (as it always has); the dashboard's form audits the message it shows."""
    if acting.source == SwapTrigger.DASHBOARD:
        return outcome
    return Outcome(outcome.message, outcome.result, detail="")


def do_create_model(name: str, definition: Mapping[str, Any], *, acting: Acting) -> Outcome:
    """Add model `name` with its config file entry `definition`."""
    if ModelDefinition.objects.filter(name=name).exists():
        # Refused before anything is attempted, so not audited (the client picks a name).
        raise NameTaken(f"a model named {name!r} exists")
    with audited(acting, "create_model", name) as done:
        _saved(acting, name, dict(definition))
        return done(_quiet(Outcome(f"{name} created"), acting))


def do_edit_model(
    name: str, definition: Mapping[str, Any] | str, *, merge: bool = False, acting: Acting
) -> Outcome:
    """Replace model `name`'s entry with `definition` (a mapping, or its JSON text from the
    dashboard's form), or with `merge` change only the keys it gives."""
    with audited(acting, "edit", name) as done:
        model = model_named(name)
        entry = _entry(definition)
        if merge and isinstance(entry, dict):
            entry = _merged(model_entry(model), entry)
        return done(_quiet(_saved(acting, name, entry), acting))


# One setting, written in either of llmux's forms (the export picks one): a change given in
# either form replaces the current one, which would otherwise disagree with it.
_EVICTION_FORMS = ("sleep_level", "eviction")


def _merged(current: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    if any(key in change for key in _EVICTION_FORMS):
        current = {k: v for k, v in current.items() if k not in _EVICTION_FORMS}
    return {**current, **change}


def _entry(definition: Mapping[str, Any] | str) -> object:
    if not isinstance(definition, str):
        return dict(definition)
    try:
        return json.loads(definition)
    except ValueError as exc:
        raise ActionError(f"the definition is not valid JSON: {exc}") from None


def do_delete_model(name: str, *, acting: Acting) -> Outcome:
    """Delete model `name`; refused while its engine runs or an image needs it."""
    with audited(acting, "delete_model", name) as done:
        try:
            delete_model(name)
        except ConfigError as exc:
            raise InvalidDefinition(exc) from None
        return done(Outcome(f"{name} deleted", detail=""))


def do_set_override(name: str, policy: EvictionPolicy | None, *, acting: Acting) -> Outcome:
    """Override how model `name` is evicted until cleared (None); its definition stays."""
    label = policy.label if policy else "cleared"
    with audited(acting, "override", name) as done:
        model = model_named(name)
        control.set_eviction_override(model, policy)
        return done(Outcome(f"eviction override of {name}: {label}", detail=label))


def do_create_key(
    name: str,
    *,
    scopes: list[str],
    rpm_limit: int | None,
    expires_at: datetime | None,
    acting: Acting,
) -> api_keys.NewKey:
    """A new gateway API key (administrators); its plaintext is in the answer, only there."""
    acting.refuse_non_admins("create_key", name)
    unknown = api_keys.unknown_scopes(scopes)
    if unknown:
        problem = f"no model or alias is named {', '.join(map(repr, unknown))}"
        acting.record("create_key", name, AuditResult.FAILED, problem)
        raise ActionError(f"scopes: {problem}")
    created = api_keys.create_key(
        name, scopes=scopes, rpm_limit=rpm_limit, expires_at=expires_at, created_by=acting.user
    )
    acting.record("create_key", f"{created.key.name} ({created.key.prefix})", AuditResult.OK)
    return created


def do_revoke_key(key: ApiKey, *, acting: Acting) -> None:
    """Revoke a gateway API key (administrators): the gateway refuses it from now on."""
    target = f"{key.name} ({key.prefix})"
    acting.refuse_non_admins("revoke_key", target)
    api_keys.revoke_key(key)
    acting.record("revoke_key", target, AuditResult.OK)
