"""GPU telemetry for the status snapshot: each GPU's utilisation, memory, temperature and
power with their last minutes, which model holds how much of it, and the host RAM that
sleeping models hold instead.

Read from the GPU probe (NVML, or the simulated engines' ledger) and /proc whenever a
snapshot is made. The history is this process's (`HISTORY`): the readings its snapshots
took, one per slot of a few seconds, so each web process shows what it saw; a process that
made no snapshot for a while shows a gap, not invented points.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

from llmux_site.core.gpu import GpuProbe
from llmux_site.core.gpu_telemetry import GpuTelemetry, TelemetryHistory, resident_bytes
from llmux_site.core.processes import process_trees
from models_app.models import EngineState, ModelDefinition
from models_app.wiring import gpu_probe

log = logging.getLogger(__name__)

HISTORY = TelemetryHistory()
# Engines that sleep in their process: their weights wait in host RAM (vLLM sleep level 1),
# or their whole GPU state does (CUDA suspend).
ASLEEP = frozenset({EngineState.SLEEPING, EngineState.SUSPENDED})


class ModelShare(TypedDict):
    """The GPU memory one model's engine holds on one GPU."""

    model: str
    bytes: int


class GpuHistory(TypedDict):
    """One GPU's readings of the last minutes, oldest first, as parallel lists."""

    at: list[float]  # seconds since the epoch
    utilization: list[int | None]
    used: list[int]
    temperature: list[int | None]
    power: list[float | None]


class GpuTelemetryStatus(TypedDict):
    """One GPU now: memory in bytes, utilisation in percent, °C, watts (None: not reported)."""

    id: int
    name: str
    used: int
    total: int
    utilization: int | None
    temperature: int | None
    power: float | None
    power_limit: float | None
    models: list[ModelShare]  # by model name; models holding nothing here are left out
    other: int  # used, but by no engine of llmux (other processes, the driver's reserve)
    history: GpuHistory


class SleepingMemory(TypedDict):
    """The host RAM one sleeping model's engine holds (its process tree's resident set)."""

    model: str
    state: str
    state_label: str
    host_bytes: int | None  # None where /proc could not be read


class Telemetry(TypedDict):
    """The GPUs, who holds them, and the host RAM of sleeping models."""

    probe: str  # nvml or ledger
    history_s: float  # how far back each history reaches
    history_every_s: float  # one reading per slot of this length (a longer step is a gap)
    gpus: list[GpuTelemetryStatus]
    sleeping: list[SleepingMemory]


@dataclass(frozen=True, slots=True)
class _Engine:
    model: str
    state: str
    tree: list[int]


def _engines(models: Sequence[ModelDefinition]) -> list[_Engine]:
    """Every model's engine that has a process, with its process tree (one /proc scan)."""
    live = {
        model.name: runtime
        for model in models
        if (runtime := getattr(model, "runtime", None)) is not None
        and runtime.pid is not None
        and runtime.state in EngineState.with_process()
    }
    if not live:
        return []
    trees = process_trees([(r.pid, r.pgid or 0) for r in live.values()])
    return [_Engine(name, r.state, trees.get(r.pid, [])) for name, r in live.items()]


def _shares(probe: GpuProbe, engines: Sequence[_Engine]) -> dict[int, list[ModelShare]]:
    """GPU id -> what each engine holds there, by model name; unknown memory left out."""
    shares: dict[int, list[ModelShare]] = {}
    for engine in sorted(engines, key=lambda e: e.model):
        held = probe.used_by_pids_per_device(engine.tree) if engine.tree else None
        for gpu, nbytes in sorted((held or {}).items()):
            if nbytes > 0:
                shares.setdefault(gpu, []).append({"model": engine.model, "bytes": nbytes})
    return shares


def _history(gpu: int) -> GpuHistory:
    series = HISTORY.series(gpu)
    return {
        "at": series.at,
        "utilization": series.utilization,
        "used": series.used_bytes,
        "temperature": series.temperature_c,
        "power": series.power_w,
    }


def _gpu(reading: GpuTelemetry, shares: Mapping[int, list[ModelShare]]) -> GpuTelemetryStatus:
    models = shares.get(reading.id, [])
    return {
        "id": reading.id,
        "name": reading.name,
        "used": reading.used_bytes,
        "total": reading.total_bytes,
        "utilization": reading.utilization,
        "temperature": reading.temperature_c,
        "power": reading.power_w,
        "power_limit": reading.power_limit_w,
        "models": models,
        "other": max(0, reading.used_bytes - sum(share["bytes"] for share in models)),
        "history": _history(reading.id),
    }


def _sleeping(engines: Sequence[_Engine]) -> list[SleepingMemory]:
    return [
        {
            "model": engine.model,
            "state": engine.state,
            "state_label": EngineState(engine.state).label,
            "host_bytes": resident_bytes(engine.tree),
        }
        for engine in sorted(engines, key=lambda e: e.model)
        if engine.state in ASLEEP
    ]


def gpu_telemetry(models: Sequence[ModelDefinition]) -> Telemetry:
    """The GPUs now and lately, who holds them, and what sleeping models hold in host RAM.

    `models` come with their runtime rows (select_related). A probe that fails leaves the
    GPUs out, never the page.
    """
    probe = gpu_probe()
    engines = _engines(models)
    readings: list[GpuTelemetry] = []
    shares: dict[int, list[ModelShare]] = {}
    try:  # a probe error must not break the page: what could be read is shown
        readings = probe.telemetry()
        shares = _shares(probe, engines)
    except Exception:
        log.debug("GPU telemetry could not be read", exc_info=True)
    if readings:  # a failed read leaves its slot open for the next one
        HISTORY.record(readings)
    return {
        "probe": probe.kind,
        "history_s": HISTORY.span_s,
        "history_every_s": HISTORY.every_s,
        "gpus": [_gpu(reading, shares) for reading in readings],
        "sleeping": _sleeping(engines),
    }
