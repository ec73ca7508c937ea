"""Operator control (llmux 0.5's /control): every action goes through the switch queue."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from llmux_site.core.eviction_policy import EvictionPolicy, ProcessAction, WeightsAction
from models_app import protocol
from models_app.models import (
    Mode,
    ModelDefinition,
    OperationKind,
    RegistryConfig,
    SwapTrigger,
    SwitchRequest,
)
from models_app.services import pins, switch_queue
from models_app.services.runtime import runtime_for

STOP = EvictionPolicy(WeightsAction.RETAIN, ProcessAction.STOP)


class ControlError(Exception):
    """An operator action that cannot be carried out as asked (the API answers 409)."""


def set_mode(mode: str, *, actor: str = "") -> RegistryConfig:
    """auto: requests switch models; manual: only the pinned (or active) model is served."""
    if mode not in Mode.values:
        raise ControlError(f"unknown mode {mode!r}; expected auto or manual")
    config = RegistryConfig.load()
    RegistryConfig.objects.filter(pk=config.pk).update(mode=mode, updated_at=timezone.now())
    protocol.after_commit(protocol.RegistryChanged())
    config.refresh_from_db()
    return config


def pin(
    model: ModelDefinition, *, actor: str = "", trigger: str = SwapTrigger.API
) -> SwitchRequest:
    """Switch to `model` and stay there: manual mode, other models answer 503. If the
    switch fails, the mode and pin before it come back (`pins.undo_failed_pin`)."""
    with transaction.atomic():
        before = RegistryConfig.objects.select_for_update().get(pk=RegistryConfig.load().pk)
        pins.set_pin(Mode.MANUAL, model)
        request = force_switch(model, actor=actor, trigger=trigger)
        # First pin wins: a second pin joining the same switch keeps the first one's undo.
        SwitchRequest.objects.filter(pk=request.pk, undo_mode="").update(
            undo_mode=before.mode, undo_pinned=before.pinned_model_id
        )
        return request


def unpin(*, actor: str = "") -> RegistryConfig:
    RegistryConfig.load()
    pins.set_pin(Mode.AUTO, None)
    return RegistryConfig.load()


def force_switch(
    model: ModelDefinition, *, actor: str = "", trigger: str = SwapTrigger.API
) -> SwitchRequest:
    """Make `model` active now: no cooldown, runs even when no request waits. In manual
    mode the pin moves to `model` first, as llmux's /control/switch does: otherwise the
    model just switched to would refuse its own requests."""
    with transaction.atomic():
        RegistryConfig.load()
        if RegistryConfig.objects.filter(pk=RegistryConfig.SINGLETON_PK, mode=Mode.MANUAL).exists():
            pins.set_pin(Mode.MANUAL, model)
        request = switch_queue.request_switch(model, trigger=trigger, actor=actor, force=True)
        _require_kind(request, OperationKind.SWITCH)  # refused: the pin is not moved either
    return request


def wake(
    model: ModelDefinition, *, actor: str = "", trigger: str = SwapTrigger.API
) -> SwitchRequest:
    """Bring `model` up (evicting its group's active model, as any switch does)."""
    request = switch_queue.request_switch(model, trigger=trigger, actor=actor)
    _require_kind(request, OperationKind.SWITCH)
    return request


def evict(
    model: ModelDefinition,
    policy: EvictionPolicy | None = None,
    *,
    actor: str = "",
    trigger: str = SwapTrigger.API,
) -> SwitchRequest:
    """Evict `model` by `policy` (default: its own) without bringing another model up."""
    request = switch_queue.request_operation(
        model, kind=OperationKind.EVICT, policy=policy, trigger=trigger, actor=actor
    )
    _require_kind(request, OperationKind.EVICT)
    return request


def sleep(
    model: ModelDefinition, *, actor: str = "", trigger: str = SwapTrigger.API
) -> SwitchRequest:
    return evict(model, None, actor=actor, trigger=trigger)


def stop(
    model: ModelDefinition, *, actor: str = "", trigger: str = SwapTrigger.API
) -> SwitchRequest:
    return evict(model, STOP, actor=actor, trigger=trigger)


def set_eviction_override(model: ModelDefinition, policy: EvictionPolicy | None) -> None:
    """Override how `model` is evicted until cleared (None); its definition is unchanged."""
    runtime = runtime_for(model)
    runtime.override_weights = policy.weights.value if policy else ""
    runtime.override_process = policy.process.value if policy else ""
    runtime.save(update_fields=["override_weights", "override_process"])


def _require_kind(request: SwitchRequest, kind: str) -> None:
    if request.kind != kind:
        raise ControlError(
            f"another operation ({request.kind}) on {request.target.name} is already queued"
        )
