"""vLLM sleep mode follows the host's platform (LLMUX_SLEEP_MODE) and the eviction policy.

The simulator with `--sim-platform cpu` plays vLLM's CPU build: it refuses
`--enable-sleep-mode` at start, so llmux must not pass it, and an eviction that sleeps
must stop the engine instead, saying why in the swap record.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from llmux_site.core.config import parse_config
from llmux_site.core.eviction_policy import EvictionPolicy
from llmux_site.core.launch import sleep_mode_in
from models_app.models import EngineRuntime, EngineState, ModelDefinition, RegistryConfig, SwapEvent
from models_app.services import control, switch_queue
from models_app.services.engines import engine_command
from models_app.services.registry import ImportReport, apply_registry
from models_app.services.runtime import engine_target, stop_all_engines
from tests.plugins.engines import free_port

FAST = ["--sim-startup-seconds", "0", "--sim-weights-bytes", "64KiB", "--sim-kv-bytes", "64KiB"]
CPU_BUILD = ["--sim-platform", "cpu"]


def import_models(**models: dict[str, Any]) -> ImportReport:
    body = {
        name: {"model_path": f"org/{name}", "port": free_port(), **m} for name, m in models.items()
    }
    return apply_registry(
        parse_config(
            {"vllm_command": "llmux-sim", "policy": {"min_active_secs": 0}, "models": body}
        )
    )


def argv_of(name: str) -> list[str]:
    return engine_command(ModelDefinition.objects.get(name=name), RegistryConfig.load()).argv


@pytest.mark.django_db
def test_the_simulator_has_sleep_mode_like_a_gpu_vllm_unless_it_plays_the_cpu_build() -> None:
    report = import_models(
        gpu={"sleep_level": 1},
        cpu={"sleep_level": 1, "extra_args": CPU_BUILD},
        stops={"sleep_level": 5},
    )

    assert sleep_mode_in(argv_of("gpu"))
    assert not sleep_mode_in(argv_of("cpu"))
    assert not sleep_mode_in(argv_of("stops"))  # its eviction never sleeps
    # Only a warning: a registry may describe models for other hosts.
    assert report.warnings == (
        "cpu: eviction offload+keep_running needs vLLM sleep mode, which this host's platform "
        "lacks for its engine (LLMUX_SLEEP_MODE=auto): it will stop the engine instead",
    )


@pytest.mark.django_db
def test_llmux_sleep_mode_decides_over_the_platform() -> None:
    import_models(sim={"sleep_level": 2}, real={"sleep_level": 2, "engine": "vllm"})
    ModelDefinition.objects.filter(name="real").update(command=["vllm"])

    with override_settings(LLMUX_SLEEP_MODE="on"):
        assert sleep_mode_in(argv_of("sim")) and sleep_mode_in(argv_of("real"))
    with override_settings(LLMUX_SLEEP_MODE="off"):
        assert not sleep_mode_in(argv_of("sim")) and not sleep_mode_in(argv_of("real"))


@pytest.mark.django_db
def test_an_override_that_sleeps_starts_the_engine_with_sleep_mode() -> None:
    import_models(stops={"sleep_level": 5})
    model = ModelDefinition.objects.get(name="stops")

    def spec_argv() -> list[str]:
        return list(engine_target(model, RegistryConfig.load()).spec.argv)

    assert not sleep_mode_in(spec_argv())
    control.set_eviction_override(model, EvictionPolicy.from_label("offload+keep_running"))
    assert sleep_mode_in(spec_argv())


@pytest.mark.django_db
def test_the_served_model_name_reaches_the_engine() -> None:
    import_models(named={"served_model_name": "tiny"})

    argv = argv_of("named")

    assert argv[argv.index("--served-model-name") + 1] == "tiny"


@pytest.mark.django_db(transaction=True)
def test_a_sleeping_eviction_without_sleep_mode_stops_the_engine_and_the_swap_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(switch_queue, "LINGER_SECS", 0.0)
    import_models(
        a={"sleep_level": 1, "extra_args": [*FAST, *CPU_BUILD]},
        b={"sleep_level": 5, "extra_args": [*FAST, *CPU_BUILD]},
    )
    a, b = ModelDefinition.objects.get(name="a"), ModelDefinition.objects.get(name="b")
    try:
        for model in (a, b):
            request = switch_queue.request_switch(model, trigger="api")
            switch_queue.process_group(request.group, "holder")
    finally:
        stop_all_engines(grace=5)

    swap = SwapEvent.objects.get(from_name="a", to_name="b")
    assert (swap.outcome, swap.escalated, swap.bringup) == ("succeeded", True, "cold_start")
    assert "eviction of a by offload+keep_running failed: SleepModeUnavailable" in swap.error
    assert "runs without vLLM sleep mode" in swap.error
    assert EngineRuntime.objects.get(model=a).state == EngineState.STOPPED
