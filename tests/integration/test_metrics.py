"""/metrics of a running llmux after a scripted a→b→a→b: exact counts, real buckets."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import Llmux, sim_model
from tests.plugins.engines import free_port


def scrape(server: Llmux) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, Any], sample_name: str, **labels: str) -> float:
    family_name = sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_bucket")
    for sample in families[family_name].samples:
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    raise AssertionError(f"no sample {sample_name} {labels}")


def events(server: Llmux, name: str) -> list[dict[str, Any]]:
    found = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == name:
                found.append(entry)
    return found


def test_a_to_b_to_a_to_b_yields_exactly_the_expected_metrics(llmux: Llmux) -> None:
    llmux.start(
        {
            "vllm_command": "llmux-sim",
            "policy": {"min_active_secs": 0},
            "models": {
                "a": sim_model(free_port(), sleep_level=1),
                "b": sim_model(free_port(), sleep_level=1),
            },
        },
        env={"LLMUX_LOG_FORMAT": "json"},
    )
    client = llmux.client(timeout=60)
    for model in ("a", "b", "a", "b"):
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
    llmux.swaps()  # every swap row closed (the worker observes when it closes one)
    families = scrape(llmux)

    switches = {
        (s.labels["from"], s.labels["to"], s.labels["result"]): s.value
        for s in families["llmux_switches"].samples
        if s.name == "llmux_switches_total"
    }
    assert switches == {
        ("none", "a", "succeeded"): 1,
        ("a", "b", "succeeded"): 2,
        ("b", "a", "succeeded"): 1,
    }
    assert families["llmux_switch_duration_seconds"].type == "histogram"
    buckets = [
        s
        for s in families["llmux_switch_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["to"] == "b"
    ]
    assert len(buckets) > 5 and buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 2
    phases = {
        s.labels["phase"]: s.value
        for s in families["llmux_switch_phase_seconds"].samples
        if s.name == "llmux_switch_phase_seconds_count"
    }
    # Every switch brings its model up and probes it; three had an outgoing model to drain
    # and evict (cooldown and backoff run too, for no time, with min_active_secs 0).
    assert phases["bringup"] == phases["readiness"] == 4
    assert phases["drain"] == phases["evict"] == 3
    assert value(families, "llmux_requests_total", model="a", status="200") == 2
    assert value(families, "llmux_requests_total", model="b", status="200") == 2
    assert value(families, "llmux_time_to_first_byte_seconds_count", model="a") == 2
    assert value(families, "llmux_queue_wait_seconds_count", model="b") == 2
    assert value(families, "llmux_engine_state", model="b", state="running") == 1
    assert value(families, "llmux_engine_state", model="a", state="sleeping") == 1
    assert value(families, "llmux_model_active_duration_seconds_count", model="a") == 2

    # The same switches as structured log events, with their phases and durations.
    activated = events(llmux, "model_activated")
    assert [(e["model"], e["outgoing"], e["bringup"]) for e in activated] == [
        ("a", None, "cold_start"),
        ("b", "a", "cold_start"),
        ("a", "b", "wake"),
        ("b", "a", "wake"),
    ]
    assert all({"bringup", "readiness"} <= set(e["phases_ms"]) for e in activated)
    assert all(e["level"] == "INFO" and e["total_ms"] > 0 for e in activated)
    assert len(events(llmux, "switch_started")) == 4
