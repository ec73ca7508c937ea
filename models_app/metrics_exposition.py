"""`/metrics`' text: the counters and histograms every process wrote (models_app.metrics),
merged, and gauges of the present read at scrape time from the status snapshot, so a
process that died never leaves a stale value behind."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from models_app.models import EngineState
from models_app.snapshot import GpuMemory, ModelStatus, status_snapshot
from models_app.telemetry import Telemetry


class StateCollector(Collector):
    """Gauges of the present, read when scraped (the database and the GPU probe)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = status_snapshot()
        yield from _model_gauges(state["models"])
        yield from _gpu_gauges(state["gpus"])
        yield from _telemetry_gauges(state["telemetry"])


def _model_gauges(models: list[ModelStatus]) -> tuple[GaugeMetricFamily, ...]:
    """Each model's state, whether it is active, its requests and its last switch's cost."""
    engine = GaugeMetricFamily(
        "llmux_engine_state", "1 for each model's current state", labels=["model", "state"]
    )
    # llmux's gauge: 1 for the active model, 0 for the others (llmux: the one before).
    active = GaugeMetricFamily(
        "llmux_active_model_info", "1 for each model active on its GPUs", labels=["model"]
    )
    in_flight = GaugeMetricFamily("llmux_in_flight", "Requests in flight", labels=["model"])
    queued = GaugeMetricFamily("llmux_queue_depth", "Requests waiting", labels=["model"])
    cost = GaugeMetricFamily(
        "llmux_estimated_switch_cost_seconds", "The last switch to each model", labels=["model"]
    )
    for model in models:
        engine.add_metric([model["name"], model["state"]], 1)
        active.add_metric([model["name"]], int(model["state"] == EngineState.RUNNING))
        in_flight.add_metric([model["name"]], model["in_flight"])
        queued.add_metric([model["name"]], model["queued"])
        if model["last_switch_ms"] is not None:
            cost.add_metric([model["name"]], model["last_switch_ms"] / 1000)
    return engine, active, in_flight, queued, cost


def _gpu_gauges(gpus: list[GpuMemory]) -> tuple[GaugeMetricFamily, ...]:
    """Each GPU's memory in use and in all, as the probe read it."""
    memory = GaugeMetricFamily("llmux_gpu_memory_bytes", "GPU memory in use", labels=["gpu"])
    total = GaugeMetricFamily("llmux_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
    for gpu in gpus:
        memory.add_metric([str(gpu["id"])], gpu["used"])
        total.add_metric([str(gpu["id"])], gpu["total"])
    return memory, total


def _telemetry_gauges(telemetry: Telemetry) -> tuple[GaugeMetricFamily, ...]:
    """Each GPU's load, temperature and power, who holds its memory, and the host RAM of
    sleeping models; a figure the GPU does not report is left out, not 0."""
    gpu = ["gpu"]
    load = GaugeMetricFamily(
        "llmux_gpu_utilization_ratio", "Share of the last sample a kernel ran (0-1)", labels=gpu
    )
    heat = GaugeMetricFamily("llmux_gpu_temperature_celsius", "GPU temperature", labels=gpu)
    power = GaugeMetricFamily("llmux_gpu_power_watts", "GPU power draw", labels=gpu)
    limit = GaugeMetricFamily("llmux_gpu_power_limit_watts", "GPU power limit", labels=gpu)
    held = GaugeMetricFamily(
        "llmux_gpu_model_memory_bytes", "GPU memory a model's engine holds", labels=["gpu", "model"]
    )
    for status in telemetry["gpus"]:
        label = [str(status["id"])]
        for family, value in (
            (load, None if status["utilization"] is None else status["utilization"] / 100),
            (heat, status["temperature"]),
            (power, status["power"]),
            (limit, status["power_limit"]),
        ):
            if value is not None:
                family.add_metric(label, value)
        for share in status["models"]:
            held.add_metric([*label, share["model"]], share["bytes"])
    sleeping = GaugeMetricFamily(
        "llmux_sleeping_host_memory_bytes",
        "Host RAM (resident set) a sleeping model's engine holds",
        labels=["model"],
    )
    for engine in telemetry["sleeping"]:
        if engine["host_bytes"] is not None:
            sleeping.add_metric([engine["model"]], engine["host_bytes"])
    return load, heat, power, limit, held, sleeping


def exposition() -> bytes:
    """The text format, merged over every process that wrote metrics."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(StateCollector())
    return generate_latest(registry)
