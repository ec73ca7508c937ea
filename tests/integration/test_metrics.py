"""/metrics of a running llmux after scripted switches: exact counts, real buckets, and the
Rust llmux's names and labels for its queries."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import Llmux, sim_model
from tests.plugins.engines import free_port


def scrape(server: Llmux) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(families: dict[str, Any], sample_name: str, **labels: str) -> list[Any]:
    """The samples named `sample_name` whose labels include `labels` (none: no family)."""
    family_name = sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_bucket")
    family = families.get(family_name.removesuffix("_sum"))
    return [
        sample
        for sample in (family.samples if family is not None else [])
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def value(families: dict[str, Any], sample_name: str, **labels: str) -> float:
    """The sum of the samples that match (over the labels not given)."""
    found = samples(families, sample_name, **labels)
    if not found:
        raise AssertionError(f"no sample {sample_name} {labels}")
    return sum(float(sample.value) for sample in found)


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
        ("", "a", "succeeded"): 1,
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
        phase: value(families, "llmux_switch_phase_seconds_count", phase=phase)
        for phase in ("drain", "evict", "bringup", "readiness")
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


def ask(client: openai.OpenAI, model: str) -> None:
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )


def by_labels(found: list[Any], *names: str) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels[name] for name in names): s.value for s in found}


def test_llmux_queries_find_llmux_names_labels_and_buckets(llmux: Llmux) -> None:
    """The Rust llmux's series after a→b→a, then a switch to a model that cannot start:
    its names, its labels with its values, and real buckets (LLMUX_SURFACES.md §3)."""
    llmux.start(
        {
            "vllm_command": "llmux-sim",
            "policy": {"min_active_secs": 0},
            "models": {
                "a": sim_model(free_port(), sleep_level=1),
                "b": sim_model(free_port(), sleep_level=1),
                "broken": sim_model(free_port(), extra_args=["--sim-fault", "crash=startup"]),
            },
        }
    )
    client = llmux.client(timeout=60)
    for model in ("a", "b", "a", "a", "a", "a"):  # the last three find `a` active
        ask(client, model)
    llmux.swaps()
    families = scrape(llmux)
    assert_llmux_switch_series(families)
    assert_llmux_request_series(families)
    # 1 for the active model, 0 for the one before.
    active = by_labels(samples(families, "llmux_active_model_info"), "model")
    assert active == {("a",): 1, ("b",): 0, ("broken",): 0}

    # rate(llmux_switch_failures_total[5m]): a switch to a model that never starts.
    assert not samples(families, "llmux_switch_failures_total")
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, "broken")
    assert caught.value.status_code == 503
    llmux.swaps()
    after = scrape(llmux)
    failures = by_labels(samples(after, "llmux_switch_failures_total"), "to")
    assert failures == {("broken",): 1}
    assert value(after, "llmux_switches_total", to="broken", result="failed") == 1
    assert value(after, "llmux_switch_total_seconds_count", to="broken", result="failed") == 1


def assert_llmux_switch_series(families: dict[str, Any]) -> None:
    """a→b→a in llmux's switch series: from "" on the cold start, real buckets, its phases."""
    # rate(llmux_switches_total[5m])
    switches = samples(families, "llmux_switches_total", result="succeeded")
    assert by_labels(switches, "from", "to") == {("", "a"): 1, ("a", "b"): 1, ("b", "a"): 1}
    # 1 - rate(llmux_switch_total_seconds_sum[5m]): a real histogram of the same switches.
    assert families["llmux_switch_total_seconds"].type == "histogram"
    for pair in (("", "a"), ("a", "b"), ("b", "a")):
        labels = {"from": pair[0], "to": pair[1], "result": "succeeded"}
        buckets = samples(families, "llmux_switch_total_seconds_bucket", **labels)
        assert len(buckets) > 5 and buckets[-1].labels["le"] == "+Inf"
        assert buckets[-1].value == value(families, "llmux_switch_total_seconds_count", **labels)
        assert value(families, "llmux_switch_total_seconds_sum", **labels) > 0
    # llmux's phases beside ours: sleep is the eviction, wake the bring-up and readiness.
    phases = by_labels(samples(families, "llmux_switch_phase_seconds_count"), "phase", "from", "to")
    assert phases[("sleep", "a", "b")] == phases[("wake", "a", "b")] == 1
    assert phases[("sleep", "b", "a")] == phases[("wake", "b", "a")] == 1
    assert phases[("wake", "", "a")] == 1 and ("sleep", "", "a") not in phases
    assert phases[("evict", "a", "b")] == phases[("bringup", "a", "b")] == 1


def assert_llmux_request_series(families: dict[str, Any]) -> None:
    """Six requests in llmux's request series: by model and whether they waited."""
    waited = by_labels(samples(families, "llmux_requests_total", status="200"), "model", "waited")
    assert waited[("b", "true")] == 1 and ("b", "false") not in waited
    assert waited[("a", "true")] >= 2 and waited[("a", "false")] >= 1  # a loaded box may wait
    assert waited[("a", "true")] + waited[("a", "false")] == 5
    # histogram_quantile(0.95, rate(llmux_request_queue_wait_seconds_bucket[5m]))
    assert families["llmux_request_queue_wait_seconds"].type == "histogram"
    buckets = samples(families, "llmux_request_queue_wait_seconds_bucket", model="a")
    assert len(buckets) > 5 and buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 5
