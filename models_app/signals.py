"""Registry rows saved or deleted anywhere (admin included) tell web processes to reload."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from models_app import protocol
from models_app.models import ModelAlias, ModelDefinition, RegistryConfig


def _registry_changed(**_kwargs: Any) -> None:
    protocol.after_commit(protocol.RegistryChanged())


def connect() -> None:
    for model in (ModelDefinition, ModelAlias, RegistryConfig):
        post_save.connect(_registry_changed, sender=model, dispatch_uid=f"registry-save-{model}")
        post_delete.connect(
            _registry_changed, sender=model, dispatch_uid=f"registry-delete-{model}"
        )
