"""Operator actions from the dashboard: validated, carried out by services, audited.

Every action is refused for viewers here, whatever the page showed; refusals are audited
too. Lifecycle actions are queued (a worker carries them out and the swap history shows
them); the audit entry says what was asked and whether it was accepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from checkpoints_app.models import CheckpointImage, ImageStatus
from checkpoints_app.services.housekeeping import delete_image
from checkpoints_app.services.operations import has_usable_image
from llmux_site.core.config import ConfigError, config_document, parse_config
from llmux_site.core.policy import EvictionPolicy, PolicyError, ProcessAction
from models_app.models import (
    AuditResult,
    EngineState,
    Mode,
    ModelDefinition,
    RegistryConfig,
    SwapTrigger,
    SwitchRequest,
)
from models_app.roles import can_act, role_of
from models_app.services import audit, control
from models_app.services.engines import eviction_policy
from models_app.services.registry import apply_registry, export_registry
from models_app.services.runtime import runtime_for


class ActionError(Exception):
    """The action cannot be done as asked; the message is shown to the operator."""


class StateError(ActionError):
    """The request is well formed but the current state forbids it (the API's 409)."""


@dataclass(frozen=True)
class Outcome:
    message: str
    result: str = AuditResult.OK
    operation: int | None = None  # the queued SwitchRequest, for lifecycle actions


def _model(data: Any) -> ModelDefinition:
    name = str(data.get("model", ""))
    model = ModelDefinition.objects.filter(name=name).first()
    if model is None:
        raise ActionError(f"no model named {name!r}")
    return model


def _queued(request: SwitchRequest, what: str) -> Outcome:
    return Outcome(f"{what}: queued as operation {request.pk}", AuditResult.QUEUED, request.pk)


def _policy(data: Any) -> EvictionPolicy:
    try:
        return EvictionPolicy.parse(str(data.get("weights", "")), str(data.get("process", "")))
    except PolicyError as exc:
        raise ActionError(str(exc)) from None


def switch_to(user: Any, data: Any, trigger: str) -> Outcome:
    model = _model(data)
    return _queued(
        control.force_switch(model, actor=user.get_username(), trigger=trigger),
        f"switch to {model.name}",
    )


def evict(user: Any, data: Any, trigger: str) -> Outcome:
    model = _model(data)
    policy = _policy(data)
    request = control.evict(model, policy, actor=user.get_username(), trigger=trigger)
    return _queued(request, f"evict {model.name} by {policy.label}")


def wake(user: Any, data: Any, trigger: str) -> Outcome:
    model = _model(data)
    return _queued(
        control.wake(model, actor=user.get_username(), trigger=trigger), f"wake {model.name}"
    )


def stop(user: Any, data: Any, trigger: str) -> Outcome:
    model = _model(data)
    return _queued(
        control.stop(model, actor=user.get_username(), trigger=trigger), f"stop {model.name}"
    )


def checkpoint(user: Any, data: Any, trigger: str) -> Outcome:
    """Evict a running model by checkpoint (its own weights action, or the one chosen)."""
    model = _model(data)
    state = runtime_for(model).state
    if state not in (EngineState.RUNNING, EngineState.SLEEPING, EngineState.SUSPENDED):
        raise StateError(f"{model.name} is {state}: bring it up first, then checkpoint it")
    weights = str(data.get("weights") or "") or (
        eviction_policy(model, RegistryConfig.load()).weights.value
    )
    policy = _policy({"weights": weights, "process": ProcessAction.CHECKPOINT.value})
    request = control.evict(model, policy, actor=user.get_username(), trigger=trigger)
    return _queued(request, f"checkpoint {model.name} ({policy.label})")


def restore(user: Any, data: Any, trigger: str) -> Outcome:
    model = _model(data)
    if not has_usable_image(model):
        raise StateError(f"{model.name} has no usable checkpoint image")
    return _queued(
        control.force_switch(model, actor=user.get_username(), trigger=trigger),
        f"restore {model.name}",
    )


def delete_image_action(user: Any, data: Any, trigger: str) -> Outcome:
    try:
        image = CheckpointImage.objects.get(pk=int(data.get("image", "")))
    except (ValueError, CheckpointImage.DoesNotExist):
        raise ActionError("no such image") from None
    if image.status in (ImageStatus.WRITING, ImageStatus.RESTORING, ImageStatus.DELETED):
        raise StateError(f"image {image.pk} is {image.status}: nothing to delete now")
    delete_image(image, reason=f"deleted by {user.get_username()}")
    return Outcome(f"image {image.pk} of {image.model_name} deleted")


def pin(user: Any, data: Any, trigger: str) -> Outcome:
    model = _model(data)
    return _queued(
        control.pin(model, actor=user.get_username(), trigger=trigger), f"pin {model.name}"
    )


def unpin(user: Any, data: Any, trigger: str) -> Outcome:
    control.unpin(actor=user.get_username())
    return Outcome("unpinned: mode auto")


def set_mode(user: Any, data: Any, trigger: str) -> Outcome:
    mode = str(data.get("mode", ""))
    if mode not in Mode.values:
        raise ActionError(f"unknown mode {mode!r}; expected auto or manual")
    control.set_mode(mode, actor=user.get_username())
    return Outcome(f"mode {mode}")


def edit_model(user: Any, data: Any, trigger: str) -> Outcome:
    """Replace one model's definition, validated exactly like `llmux_import`."""
    model = _model(data)
    try:
        entry = json.loads(str(data.get("definition", "")))
    except ValueError as exc:
        raise ActionError(f"the definition is not valid JSON: {exc}") from None
    document = config_document(export_registry())
    document["models"][model.name] = entry
    try:
        with transaction.atomic():
            restricted = role_of(user) != "admin"
            report = apply_registry(parse_config(document), restricted=restricted)
    except ConfigError as exc:
        raise ActionError(str(exc)) from None
    changed = [o for o in report.models if o.name == model.name and o.changes]
    return Outcome(f"{model.name} saved" + ("" if changed else " (no change)"))


# Each takes the user, the submitted data and the SwapTrigger its operations carry.
ACTIONS: dict[str, Callable[[Any, Any, str], Outcome]] = {
    "switch": switch_to,
    "evict": evict,
    "wake": wake,
    "stop": stop,
    "checkpoint": checkpoint,
    "restore": restore,
    "delete_image": delete_image_action,
    "pin": pin,
    "unpin": unpin,
    "mode": set_mode,
    "edit": edit_model,
}


def perform(
    user: Any, name: str, data: Any, remote_addr: str = "", source: str = "dashboard"
) -> Outcome:
    """Carry out action `name`; raises PermissionError for viewers, ActionError on bad
    input. Audited either way; the operations it queues carry `source` (dashboard or
    api) as their trigger."""
    target = str(data.get("model") or data.get("image") or data.get("mode") or "")

    def audited(result: str, detail: str) -> None:
        audit.record(
            user,
            name,
            target,
            result=result,
            detail=detail,
            remote_addr=remote_addr,
            source=source,
        )

    if not can_act(user):
        audited(AuditResult.REFUSED, "viewer")
        raise PermissionError("viewers cannot change anything")
    action = ACTIONS.get(name)
    if action is None:
        raise ActionError(f"unknown action {name!r}")
    try:
        outcome = action(user, data, SwapTrigger(source))
    except ActionError as exc:
        audited(AuditResult.FAILED, str(exc))
        raise
    except control.ControlError as exc:
        audited(AuditResult.FAILED, str(exc))
        raise StateError(str(exc)) from None
    audited(outcome.result, outcome.message)
    return outcome
