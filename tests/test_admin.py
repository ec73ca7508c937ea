"""The admin shows every model; runtime state and history are read-only there."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from checkpoints_app.models import CheckpointImage
from models_app.models import (
    EngineRuntime,
    ModelDefinition,
    Node,
    RegistryConfig,
    SwapEvent,
    SwapOutcome,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def model() -> ModelDefinition:
    return ModelDefinition.objects.create(name="qwen", model_path="Qwen/Qwen2.5-0.5B", port=8001)


@pytest.fixture
def history(model: ModelDefinition) -> None:
    node = Node.objects.create(name="gpu-host-1", cluster="llmux")
    EngineRuntime.objects.create(model=model, node=node)
    SwapEvent.objects.create(
        gpu_group="0",
        to_model=model,
        to_name=model.name,
        trigger="api",
        outcome=SwapOutcome.SUCCEEDED,
        finished_at=timezone.now(),
    )
    CheckpointImage.objects.create(model=model, model_name=model.name, location="/tmp/img-1")
    RegistryConfig.load()


READ_ONLY = [
    "models_app_engineruntime",
    "models_app_swapevent",
    "models_app_node",
    "checkpoints_app_checkpointimage",
]
EDITABLE = ["models_app_modeldefinition", "models_app_registryconfig"]


@pytest.mark.usefixtures("history")
@pytest.mark.parametrize("prefix", READ_ONLY + EDITABLE)
def test_every_model_has_an_admin_changelist(admin_client: Client, prefix: str) -> None:
    response = admin_client.get(reverse(f"admin:{prefix}_changelist"))
    assert response.status_code == 200


@pytest.mark.usefixtures("history")
@pytest.mark.parametrize("prefix", READ_ONLY)
def test_history_and_runtime_cannot_be_added_or_changed_in_the_admin(
    admin_client: Client, prefix: str
) -> None:
    add_url = reverse(f"admin:{prefix}_add")
    assert admin_client.get(add_url).status_code == 403
    changelist = admin_client.get(reverse(f"admin:{prefix}_changelist")).content.decode()
    assert f'href="{add_url}"' not in changelist


@pytest.mark.usefixtures("history")
def test_a_swap_event_cannot_be_edited_through_a_forged_post(admin_client: Client) -> None:
    event = SwapEvent.objects.get()
    url = reverse("admin:models_app_swapevent_change", args=[event.pk])
    response = admin_client.post(url, {"to_name": "forged", "outcome": "failed"})
    assert response.status_code in (200, 403)
    event.refresh_from_db()
    assert event.to_name == "qwen"
    assert event.outcome == SwapOutcome.SUCCEEDED


def test_model_definitions_are_editable_in_the_admin(
    admin_client: Client, model: ModelDefinition
) -> None:
    response = admin_client.get(reverse("admin:models_app_modeldefinition_change", args=[model.pk]))
    assert response.status_code == 200
    assert 'name="model_path"' in response.content.decode()
    # The same href the read-only test looks for is present where adding is allowed.
    add_url = reverse("admin:models_app_modeldefinition_add")
    changelist = admin_client.get(reverse("admin:models_app_modeldefinition_changelist"))
    assert f'href="{add_url}"' in changelist.content.decode()
