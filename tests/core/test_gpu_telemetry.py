"""GPU telemetry: simulated engines make their GPU busy, hot and power-hungry while they
generate; NVML's figures are read with their units; who holds what on which GPU; the host
RAM of a set of processes; the short history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from llmux_site.core.gpu import GIB, LedgerProbe, NvmlProbe
from llmux_site.core.gpu_ledger import LedgerWriter, ledger_entries
from llmux_site.core.gpu_telemetry import (
    SIMULATED_POWER_LIMIT_W,
    GpuTelemetry,
    TelemetryHistory,
    resident_bytes,
    simulated,
)
from tests.core.test_gpu import SMALL, FakeNvml, _Process
from tests.plugins.engines import EngineSpawner, SpawnedEngine

# 10 tokens a second: a 40-token answer keeps the engine busy for about 4 s.
SLOW = (*SMALL, "--sim-tokens-per-sec", "10")


def _eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _gpu(probe: LedgerProbe, gpu: int) -> GpuTelemetry:
    return next(reading for reading in probe.telemetry() if reading.id == gpu)


@contextmanager
def _generating(engine: SpawnedEngine, tokens: int) -> Iterator[threading.Thread]:
    """A completion of `tokens` tokens running in the background, waited for on exit."""
    body = json.dumps({"prompt": "hello", "max_tokens": tokens}).encode()
    request = urllib.request.Request(
        f"{engine.base_url}/v1/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    )

    def ask() -> None:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    thread = threading.Thread(target=ask)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(timeout=60)


@dataclass
class TwoGpus:
    probe: LedgerProbe
    on_gpu0: SpawnedEngine
    on_gpu1: SpawnedEngine


def _two_gpus(spawn_engine: EngineSpawner) -> TwoGpus:
    on_gpu0 = spawn_engine(extra_args=SLOW, env={"CUDA_VISIBLE_DEVICES": "0"}, name="gpu0")
    on_gpu1 = spawn_engine(extra_args=SLOW, env={"CUDA_VISIBLE_DEVICES": "1"}, name="gpu1")
    return TwoGpus(LedgerProbe(spawn_engine.ledger_dir, capacity_bytes=GIB), on_gpu0, on_gpu1)


def test_a_simulated_gpu_is_busy_hot_and_drawing_power_while_its_engine_generates(
    spawn_engine: EngineSpawner,
) -> None:
    gpus = _two_gpus(spawn_engine)
    idle = _gpu(gpus.probe, 0)
    assert (idle.utilization, idle.power_limit_w) == (0, SIMULATED_POWER_LIMIT_W)

    with _generating(gpus.on_gpu0, tokens=40) as answer:
        _eventually(lambda: (_gpu(gpus.probe, 0).utilization or 0) >= 50)
        busy, other = _gpu(gpus.probe, 0), _gpu(gpus.probe, 1)
        assert answer.is_alive()  # read while it generated, not after
    assert other.utilization == 0
    assert busy.power_w is not None and other.power_w is not None
    assert busy.temperature_c is not None and other.temperature_c is not None
    assert busy.power_w > other.power_w and busy.temperature_c > other.temperature_c
    assert busy.used_bytes == other.used_bytes  # the load, not the memory, made the difference

    # Once the answer is done, the next full second without work reads as idle again.
    _eventually(lambda: _gpu(gpus.probe, 0) == idle)


def test_the_ledger_probe_tells_which_gpu_each_engine_holds_memory_on(
    spawn_engine: EngineSpawner,
) -> None:
    gpus = _two_gpus(spawn_engine)
    tp = spawn_engine(extra_args=(*SMALL, "-tp", "2"), env={"CUDA_VISIBLE_DEVICES": "1,3"})
    held = int(gpus.probe.used_by_pids([gpus.on_gpu0.process.pid]) or 0)

    assert gpus.probe.used_by_pids_per_device([gpus.on_gpu0.process.pid]) == {0: held}
    assert gpus.probe.used_by_pids_per_device([tp.process.pid]) == {1: held // 2, 3: held // 2}
    assert gpus.probe.used_by_pids_per_device([os.getpid()]) is None  # alive, reports nothing
    assert [(g.id, g.used_bytes) for g in gpus.probe.telemetry()] == [
        (0, held),
        (1, held + held // 2),
        (3, held // 2),
    ]


def test_an_entry_without_utilization_reads_as_idle(tmp_path: Path) -> None:
    me = os.getpid()
    created = psutil.Process().create_time()
    record = {"pid": me, "create_time": created, "model": "m", "gpu_ids": [2], "bytes": 5}
    (tmp_path / f"{me}.json").write_text(json.dumps(record))  # written before utilisation

    [entry] = ledger_entries(tmp_path)
    assert (entry.bytes, entry.utilization) == (5, 0)
    assert LedgerProbe(tmp_path).telemetry()[0].utilization == 0


def test_the_writer_records_utilization_beside_bytes_and_only_on_change(tmp_path: Path) -> None:
    writer = LedgerWriter(tmp_path, model="m", gpu_ids=[0])
    writer.update(10)
    writer.report_utilization(75)
    written = writer.path.stat().st_mtime_ns
    writer.report_utilization(75)

    assert writer.path.stat().st_mtime_ns == written
    [entry] = ledger_entries(tmp_path)
    assert (entry.bytes, entry.utilization) == (10, 75)
    writer.update(20)  # the memory changes, the utilisation stays
    [entry] = ledger_entries(tmp_path)
    assert (entry.bytes, entry.utilization) == (20, 75)


# ── NVML, through the stand-in for pynvml ───────────────────────────────────────────────


@dataclass
class _Utilization:
    gpu: int
    memory: int


class NotSupportedError(Exception):
    """Like pynvml's NVMLError_NotSupported (a MIG slice has no utilisation or power)."""


class TelemetryNvml(FakeNvml):
    """Two GPUs: the first reports everything, the second neither utilisation nor power."""

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> _Utilization:
        if handle == 1:
            raise NotSupportedError
        return _Utilization(gpu=87, memory=40)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == 0  # NVML_TEMPERATURE_GPU: the die, not the memory
        return 61 + handle

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        if handle == 1:
            raise NotSupportedError
        return 412_345  # milliwatts

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return 700_000


def test_nvml_telemetry_is_read_in_percent_celsius_and_watts() -> None:
    probe = NvmlProbe(TelemetryNvml(compute=[[], []], graphics=[[], []]))

    assert probe.telemetry() == [
        GpuTelemetry(0, "NVIDIA H100 80GB HBM3", 80 * GIB, GIB, 87, 61, 412.345, 700.0),
        GpuTelemetry(1, "NVIDIA H100 80GB HBM3", 80 * GIB, 2 * GIB, None, 62, None, 700.0),
    ]


@dataclass
class _MemoryV2:
    total: int
    reserved: int
    used: int


class MemoryV2Nvml(FakeNvml):
    """A library and driver with NVML's v2 memory reading: 480 MiB reserved by the driver,
    which v1 counts as used (as an idle H100 on driver 580 read)."""

    nvmlMemory_v2 = 0x02000028
    RESERVED = 480 * 1024 * 1024

    def nvmlDeviceGetMemoryInfo(self, handle: int, version: int | None = None) -> Any:
        v1 = super().nvmlDeviceGetMemoryInfo(handle)
        if version is None:
            return type(v1)(total=v1.total, used=v1.used + self.RESERVED)
        assert version == self.nvmlMemory_v2
        return _MemoryV2(total=v1.total, reserved=self.RESERVED, used=v1.used)


def test_nvml_memory_is_read_as_nvidia_smi_shows_it_without_the_drivers_reserve() -> None:
    probe = NvmlProbe(MemoryV2Nvml(compute=[[], []], graphics=[[], []]))

    assert [gpu.used_bytes for gpu in probe.telemetry()] == [GIB, 2 * GIB]
    assert probe.used_by_device() == {0: GIB, 1: 2 * GIB}  # the switch's figure too


def test_nvml_tells_which_gpu_the_given_pids_hold_memory_on() -> None:
    nvml = FakeNvml(
        compute=[[_Process(10, 3 * GIB), _Process(11, GIB)], [_Process(10, 2 * GIB)]],
        graphics=[[_Process(12, GIB)], []],
    )
    probe = NvmlProbe(nvml)

    assert probe.used_by_pids_per_device([10]) == {0: 3 * GIB, 1: 2 * GIB}
    assert probe.used_by_pids_per_device([11, 12]) == {0: 2 * GIB}
    assert probe.used_by_pids_per_device([99]) == {}
    hidden = NvmlProbe(FakeNvml(compute=[[_Process(10, None)], []], graphics=[[], []]))
    assert hidden.used_by_pids_per_device([10]) is None


# ── simulated figures, host RAM, history ────────────────────────────────────────────────


def test_simulated_power_and_temperature_rise_with_load_and_memory() -> None:
    def reading(utilization: int, used: int) -> GpuTelemetry:
        return simulated(0, "sim", total=80 * GIB, used=used, utilization=utilization)

    idle, loaded, busy = reading(0, 0), reading(0, 40 * GIB), reading(100, 40 * GIB)
    assert idle.power_w is not None and loaded.power_w is not None and busy.power_w is not None
    assert idle.power_w < loaded.power_w < busy.power_w < SIMULATED_POWER_LIMIT_W
    assert idle.temperature_c is not None and busy.temperature_c is not None
    assert idle.temperature_c < busy.temperature_c
    assert reading(250, 0).utilization == 100


def test_resident_bytes_sums_the_live_processes_and_skips_gone_ones() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        mine = resident_bytes([os.getpid()])
        both = resident_bytes([os.getpid(), sleeper.pid, gone.pid])
        assert mine is not None and both is not None and both > mine > 0
        assert resident_bytes([gone.pid]) is None
    finally:
        sleeper.kill()
        sleeper.wait()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _reading(used: int) -> list[GpuTelemetry]:
    return [GpuTelemetry(0, "sim", 100, used, used, 40, 100.0, 700.0)]


def test_the_history_keeps_one_reading_per_slot_for_its_span() -> None:
    clock = Clock(1000.0)
    history = TelemetryHistory(span_s=30, every_s=5, clock=clock)
    for second in range(60):  # a reading every second for a minute
        clock.now = 1000.0 + second
        history.record(_reading(second))

    series = history.series(0)
    # Half a minute at one reading in five seconds: the first of each slot.
    assert series.used_bytes == [30, 35, 40, 45, 50, 55]
    assert series.at == [1030.0, 1035.0, 1040.0, 1045.0, 1050.0, 1055.0]
    assert series.utilization == series.used_bytes
    assert history.series(7).at == []  # no such GPU


def test_the_history_shows_a_gap_where_nobody_read() -> None:
    clock = Clock(1000.0)
    history = TelemetryHistory(span_s=300, every_s=5, clock=clock)
    history.record(_reading(1))
    clock.now = 1100.0
    history.record(_reading(2))
    clock.now = 1350.0  # the first reading is now older than the span

    assert history.series(0).at == [1100.0]
