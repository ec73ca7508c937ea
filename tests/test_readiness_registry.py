"""A registry's embedding model becomes ready: its probe follows its engine's flags."""

from __future__ import annotations

import pytest

from llmux_site.core.config import parse_config
from llmux_site.core.readiness import ONE_TOKEN, ProbeKind, ReadinessProbe
from models_app.models import EngineRuntime, EngineState, ModelDefinition, RegistryConfig, SwapEvent
from models_app.services import switch_queue
from models_app.services.registry import apply_registry
from models_app.services.runtime import engine_target, stop_all_engines
from tests.plugins.engines import free_port

FAST = ["--sim-startup-seconds", "0", "--sim-weights-bytes", "64KiB", "--sim-kv-bytes", "64KiB"]


def import_models() -> None:
    apply_registry(
        parse_config(
            {
                "vllm_command": "llmux-sim",
                "models": {
                    "embed": {
                        "model_path": "org/embed",
                        "port": free_port(),
                        "sleep_level": 5,
                        "extra_args": [*FAST, "--runner", "pooling"],
                    },
                    "chat": {"model_path": "org/chat", "port": free_port(), "probe": "chat"},
                    "plain": {"model_path": "org/plain", "port": free_port()},
                },
            }
        )
    )


def probe_of(name: str) -> ReadinessProbe:
    return engine_target(ModelDefinition.objects.get(name=name), RegistryConfig.load()).readiness


@pytest.mark.django_db
def test_each_model_gets_the_probe_its_setting_or_engine_calls_for() -> None:
    import_models()

    assert probe_of("embed") == ReadinessProbe(ProbeKind.EMBEDDING)
    assert probe_of("chat") == ReadinessProbe(ProbeKind.CHAT)
    assert probe_of("plain") == ONE_TOKEN


@pytest.mark.django_db(transaction=True)
def test_an_embedding_model_becomes_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(switch_queue, "LINGER_SECS", 0.0)
    import_models()
    model = ModelDefinition.objects.get(name="embed")
    try:
        request = switch_queue.request_switch(model, trigger="api")
        switch_queue.process_group(request.group, "holder")
        state = EngineRuntime.objects.get(model=model).state
    finally:
        stop_all_engines(grace=5)

    swap = SwapEvent.objects.get(to_name="embed")
    assert (swap.outcome, swap.error) == ("succeeded", "")
    assert state == EngineState.RUNNING
