"""The mode and the pinned model (llmux's manual mode), as operator actions leave them."""

from __future__ import annotations

from django.utils import timezone

from models_app import protocol
from models_app.models import AuditResult, Mode, ModelDefinition, RegistryConfig, SwitchRequest
from models_app.services import audit


def set_pin(mode: str, model: ModelDefinition | None) -> None:
    """Set the mode and the pinned model (None: no pin); web processes hear of it."""
    RegistryConfig.objects.filter(pk=RegistryConfig.SINGLETON_PK).update(
        mode=mode, pinned_model=model, updated_at=timezone.now()
    )
    protocol.after_commit(protocol.RegistryChanged())


def undo_failed_pin(request: SwitchRequest, error: str) -> bool:
    """After `request` failed with `error`: if it was a pin's switch and the pin still
    stands (no operator changed the mode or the pin since), put back the mode and pin from
    before it, as llmux does. Whether it did; audited, as the pin was."""
    if not request.undo_mode:
        return False
    undone = RegistryConfig.objects.filter(
        pk=RegistryConfig.SINGLETON_PK, mode=Mode.MANUAL, pinned_model=request.target_id
    ).update(mode=request.undo_mode, pinned_model=request.undo_pinned_id, updated_at=timezone.now())
    if not undone:
        return False
    protocol.after_commit(protocol.RegistryChanged())
    back = f"mode {request.undo_mode}"
    if request.undo_pinned_id is not None:
        back += f", pinned {ModelDefinition.objects.get(pk=request.undo_pinned_id).name}"
    audit.record(
        None,
        "pin_rolled_back",
        ModelDefinition.objects.get(pk=request.target_id).name,
        result=AuditResult.FAILED,
        detail=f"the pin's switch failed ({error or 'no reason given'}); back to {back}",
        source="worker",
    )
    return True
