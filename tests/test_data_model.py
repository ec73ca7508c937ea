"""Database constraints forbid illegal registry and runtime states."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from llmux_site.core.switching import AWAKE, EngineStatus
from models_app.models import (
    EngineRuntime,
    EngineState,
    ModelDefinition,
    RegistryConfig,
    SwapEvent,
    SwapOutcome,
)

pytestmark = pytest.mark.django_db


def make_model(**fields: object) -> ModelDefinition:
    values: dict[str, object] = {"name": "m", "model_path": "p", "port": 8001} | fields
    return ModelDefinition.objects.create(**values)


def test_a_model_listens_on_a_port_or_a_socket_not_both_nor_neither() -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        make_model(port=8001, uds_path="/run/llmux/m.sock")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_model(port=None)
    assert make_model(port=None, uds_path="/run/llmux/m.sock").uds_path


def test_a_model_eviction_override_names_both_axes() -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        make_model(eviction_weights="offload")
    model = make_model(eviction_weights="discard", eviction_process="checkpoint")
    override = model.eviction_override()
    assert override is not None
    assert override.label == "discard+checkpoint"


def test_a_running_engine_must_have_an_identity() -> None:
    model = make_model()
    with pytest.raises(IntegrityError), transaction.atomic():
        EngineRuntime.objects.create(model=model, state=EngineState.RUNNING)
    runtime = EngineRuntime.objects.create(
        model=model, state=EngineState.RUNNING, pid=4242, create_time=1700000000.5
    )
    assert runtime.pk == model.pk


def test_a_finished_swap_has_a_finish_time_and_a_running_one_does_not() -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        SwapEvent.objects.create(
            gpu_group="0", to_name="m", trigger="api", outcome=SwapOutcome.SUCCEEDED
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        SwapEvent.objects.create(
            gpu_group="0", to_name="m", trigger="api", finished_at=timezone.now()
        )


def test_there_is_only_one_registry_config_row() -> None:
    assert RegistryConfig.load().pk == RegistryConfig.load().pk == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        RegistryConfig.objects.create(pk=2)
    assert RegistryConfig.load().default_eviction().label == "retain+stop"


def test_the_engine_state_choices_are_the_cores_engine_statuses() -> None:
    assert [(s.name, s.value) for s in EngineState] == [(s.name, s.value) for s in EngineStatus]
    assert EngineState.awake() == {"starting", "running", "draining"} == set(AWAKE)
