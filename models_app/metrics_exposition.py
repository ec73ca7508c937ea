"""`/metrics`' text: the counters and histograms every process wrote (models_app.metrics),
merged, and gauges of the present read at scrape time from the status snapshot, so a
process that died never leaves a stale value behind."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from models_app.snapshot import status_snapshot


class StateCollector(Collector):
    """Gauges of the present, read when scraped (the database and the GPU probe)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = status_snapshot()
        engine = GaugeMetricFamily(
            "llmux_engine_state", "1 for each model's current state", labels=["model", "state"]
        )
        in_flight = GaugeMetricFamily("llmux_in_flight", "Requests in flight", labels=["model"])
        queued = GaugeMetricFamily("llmux_queue_depth", "Requests waiting", labels=["model"])
        cost = GaugeMetricFamily(
            "llmux_estimated_switch_cost_seconds",
            "The last switch to each model",
            labels=["model"],
        )
        for model in state["models"]:
            engine.add_metric([model["name"], model["state"]], 1)
            in_flight.add_metric([model["name"]], model["in_flight"])
            queued.add_metric([model["name"]], model["queued"])
            if model["last_switch_ms"] is not None:
                cost.add_metric([model["name"]], model["last_switch_ms"] / 1000)
        memory = GaugeMetricFamily("llmux_gpu_memory_bytes", "GPU memory in use", labels=["gpu"])
        total = GaugeMetricFamily("llmux_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        for gpu in state["gpus"]:
            memory.add_metric([str(gpu["id"])], gpu["used"])
            total.add_metric([str(gpu["id"])], gpu["total"])
        yield from (engine, in_flight, queued, cost, memory, total)


def exposition() -> bytes:
    """The text format, merged over every process that wrote metrics."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(StateCollector())
    return generate_latest(registry)
