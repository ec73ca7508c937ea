"""GPU probing: the ledger probe against real simulated engines, NVML's absence, GPU groups."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmux_site.core import supervisor
from llmux_site.core.gpu import (
    GIB,
    GpuInfo,
    LedgerProbe,
    NvmlProbe,
    detect_probe,
    gpu_groups,
    process_tree,
)
from tests.plugins.engines import EngineSpawner, SpawnedEngine

# 64 KiB of weights and 256 KiB of KV cache: start-up and sleep/wake take milliseconds.
SMALL = (
    "--enable-sleep-mode",
    "--sim-startup-seconds",
    "0",
    "--sim-weights-bytes",
    "64KiB",
    "--sim-kv-bytes",
    "256KiB",
)
SMALL_BYTES = 64 * 1024 + 256 * 1024


def _call(engine: SpawnedEngine, method: str, path: str) -> Any:
    request = urllib.request.Request(f"{engine.base_url}{path}", method=method, data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def _gpu_bytes(engine: SpawnedEngine) -> int:
    return int(_call(engine, "GET", "/sim/state")["gpu_bytes"])


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@dataclass
class TwoEngines:
    probe: LedgerProbe
    on_gpu0: SpawnedEngine
    on_gpu1: SpawnedEngine


@pytest.fixture
def two_engines(spawn_engine: EngineSpawner) -> TwoEngines:
    """Two simulated engines, one on GPU 0 and one on GPU 1, writing one ledger."""
    on_gpu0 = spawn_engine(extra_args=SMALL, env={"CUDA_VISIBLE_DEVICES": "0"}, name="gpu0")
    on_gpu1 = spawn_engine(extra_args=SMALL, env={"CUDA_VISIBLE_DEVICES": "1"}, name="gpu1")
    return TwoEngines(LedgerProbe(spawn_engine.ledger_dir, capacity_bytes=GIB), on_gpu0, on_gpu1)


def test_the_ledger_probe_reports_what_each_awake_engine_holds(two_engines: TwoEngines) -> None:
    probe, gpu0, gpu1 = two_engines.probe, two_engines.on_gpu0, two_engines.on_gpu1
    assert _gpu_bytes(gpu0) == _gpu_bytes(gpu1) == SMALL_BYTES

    assert probe.kind == "ledger"
    assert probe.used_by_device() == {0: SMALL_BYTES, 1: SMALL_BYTES}
    assert probe.used_by_pids([gpu0.process.pid]) == SMALL_BYTES
    assert probe.used_by_pids([gpu0.process.pid, gpu1.process.pid]) == 2 * SMALL_BYTES
    # A live process that reports nothing is no simulator: no probe applies to it.
    assert probe.used_by_pids([os.getpid()]) is None
    assert probe.devices() == [
        GpuInfo(0, "simulated GPU 0", GIB, SMALL_BYTES),
        GpuInfo(1, "simulated GPU 1", GIB, SMALL_BYTES),
    ]


def test_an_engine_asleep_at_level_1_holds_nothing_on_its_gpu(two_engines: TwoEngines) -> None:
    probe, gpu0, gpu1 = two_engines.probe, two_engines.on_gpu0, two_engines.on_gpu1

    _call(gpu0, "POST", "/sleep?level=1")

    assert probe.used_by_device() == {0: 0, 1: SMALL_BYTES}
    assert probe.used_by_pids([gpu0.process.pid]) == 0
    assert probe.used_by_pids([gpu1.process.pid]) == SMALL_BYTES
    assert [gpu.id for gpu in probe.devices()] == [0, 1]  # an idle GPU is still listed

    _call(gpu0, "POST", "/wake_up")
    assert probe.used_by_pids([gpu0.process.pid]) == SMALL_BYTES


def test_a_killed_engines_ledger_entry_counts_for_nothing(two_engines: TwoEngines) -> None:
    probe, gpu0 = two_engines.probe, two_engines.on_gpu0
    entry = probe.ledger_dir / f"{gpu0.process.pid}.json"

    os.kill(gpu0.process.pid, signal.SIGKILL)  # no clean exit: its entry stays behind
    supervisor.stop(gpu0.process, grace=1.0)

    assert entry.exists()
    assert probe.used_by_device() == {0: 0, 1: SMALL_BYTES}
    assert probe.used_by_pids([gpu0.process.pid]) == 0


def test_the_ledger_probe_lists_configured_gpus_before_any_engine_ran(tmp_path: Path) -> None:
    probe = LedgerProbe(tmp_path / "absent", gpu_ids=[2, 0])

    assert probe.devices() == [
        GpuInfo(0, "simulated GPU 0", 80 * GIB, 0),
        GpuInfo(2, "simulated GPU 2", 80 * GIB, 0),
    ]
    assert probe.used_by_pids([1]) is None  # init is alive and reports nothing


def test_the_ledger_probe_does_not_know_what_a_real_engine_holds(tmp_path: Path) -> None:
    # A real vLLM on a host without NVML (its CPU build) writes no ledger entry: its memory
    # is unknown while it runs, not 0, and nothing once it is gone.
    probe = LedgerProbe(tmp_path / "ledger")
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert probe.used_by_pids([engine.pid]) is None
    finally:
        engine.kill()
        engine.wait()
    assert probe.used_by_pids([engine.pid]) == 0


def test_nvml_is_unavailable_here_so_detection_falls_back_to_the_ledger(tmp_path: Path) -> None:
    assert NvmlProbe.available() is False

    probe = detect_probe(tmp_path)

    assert isinstance(probe, LedgerProbe)
    assert probe.kind == "ledger"


def test_process_tree_lists_a_process_and_its_descendants(
    spawn_engine: EngineSpawner,
) -> None:
    engine = spawn_engine(extra_args=(*SMALL, "--sim-child-processes", "2"))
    pid = engine.process.pid

    _eventually(lambda: len(process_tree(pid)) == 3)  # the children start right after it
    assert process_tree(pid)[0] == pid
    supervisor.stop(engine.process, grace=5.0)
    assert process_tree(pid) == []


# ── NVML, through a stand-in for the pynvml module (no GPU on this machine) ──────────────


@dataclass
class _Memory:
    total: int
    used: int


@dataclass
class _Process:
    pid: int
    usedGpuMemory: int | None


class FakeNvml:
    """The part of pynvml that NvmlProbe calls: two GPUs, processes on each."""

    def __init__(self, compute: list[list[_Process]], graphics: list[list[_Process]]) -> None:
        self.compute, self.graphics = compute, graphics

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"  # older nvidia-ml-py returns bytes

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Memory:
        return _Memory(total=80 * GIB, used=(handle + 1) * GIB)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[_Process]:
        return self.compute[handle]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: int) -> list[_Process]:
        return self.graphics[handle]


def test_nvml_probe_sums_compute_and_graphics_memory_of_the_given_pids() -> None:
    nvml = FakeNvml(
        compute=[[_Process(10, 3 * GIB), _Process(11, GIB)], [_Process(10, 2 * GIB)]],
        graphics=[[_Process(12, GIB)], []],
    )
    probe = NvmlProbe(nvml)

    assert probe.used_by_pids([10]) == 5 * GIB
    assert probe.used_by_pids([10, 12]) == 6 * GIB
    assert probe.used_by_pids([99]) == 0
    assert probe.used_by_device() == {0: GIB, 1: 2 * GIB}
    assert probe.devices()[0] == GpuInfo(0, "NVIDIA H100 80GB HBM3", 80 * GIB, GIB)


def test_nvml_probe_cannot_tell_when_nvml_hides_a_processs_memory() -> None:
    probe = NvmlProbe(FakeNvml(compute=[[_Process(10, None)], []], graphics=[[], []]))

    assert probe.used_by_pids([10]) is None
    assert probe.used_by_pids([11]) == 0


# ── GPU groups ──────────────────────────────────────────────────────────────────────────


def test_models_on_disjoint_gpus_form_separate_groups() -> None:
    assert gpu_groups({"llama": [0], "qwen": [1], "mistral": [2, 3]}) == {
        "llama": "gpu:0",
        "qwen": "gpu:1",
        "mistral": "gpu:2,3",
    }


def test_models_sharing_a_gpu_share_a_group() -> None:
    assert gpu_groups({"llama": [0, 1], "qwen": [1], "mistral": [2]}) == {
        "llama": "gpu:0,1",
        "qwen": "gpu:0,1",
        "mistral": "gpu:2",
    }


def test_overlap_is_transitive_across_a_chain_of_models() -> None:
    groups = gpu_groups({"a": [0, 1], "b": [1, 2], "c": [2, 3], "d": [5]})

    assert groups == {"a": "gpu:0,1,2,3", "b": "gpu:0,1,2,3", "c": "gpu:0,1,2,3", "d": "gpu:5"}


def test_a_model_without_gpu_ids_uses_all_gpus_and_joins_every_model() -> None:
    assert gpu_groups({"llama": [0], "qwen": [], "mistral": [3]}) == {
        "llama": "gpu:all",
        "qwen": "gpu:all",
        "mistral": "gpu:all",
    }
    assert gpu_groups({"only": []}) == {"only": "gpu:all"}


def test_groups_do_not_depend_on_the_order_models_are_listed() -> None:
    models = {"c": [2, 3], "a": [0, 1], "d": [7], "b": [1, 2]}

    assert gpu_groups(models) == gpu_groups(dict(reversed(list(models.items()))))
    assert gpu_groups({}) == {}
