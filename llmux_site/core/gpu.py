"""GPU memory probing and telemetry (NVML, or the simulator's ledger) and GPU groups.

A switch verifies that an eviction really gave memory back, and the dashboard shows what each
GPU holds, who holds it and how busy, hot and power-hungry it is; both read a `GpuProbe`.
On a GPU host that is NVML (`pynvml`, from the `nvidia-ml-py` package, imported only when
asked for). Elsewhere the simulated engines report their "GPU" memory and how busy they are
through a ledger directory (format in `llmux_site.core.gpu_ledger`), and `LedgerProbe` reads
it, ignoring entries of dead or recycled pids.

GPU ids are the ones written in `gpu_ids` / `CUDA_VISIBLE_DEVICES`. NVML numbers devices in
PCI bus order while CUDA by default puts the fastest first: engines should run with
`CUDA_DEVICE_ORDER=PCI_BUS_ID` so that both agree on a mixed-GPU host.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

from llmux_site.core.gpu_ledger import ledger_entries, read_ledger
from llmux_site.core.gpu_telemetry import (
    GpuTelemetry,
    nvml_memory,
    nvml_text,
    read_nvml,
    simulated,
)
from llmux_site.core.processes import VANISHED

GIB = 1024**3
# The ledger knows what simulated engines hold, not how big the simulated GPU is.
DEFAULT_SIMULATED_CAPACITY = 80 * GIB
ALL_GPUS = "gpu:all"


class GpuProbeError(Exception):
    """A probe cannot be used (NVML missing, no driver) or a query failed."""


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU and its memory right now."""

    id: int
    name: str
    total_bytes: int
    used_bytes: int

    @property
    def free_bytes(self) -> int:
        return max(0, self.total_bytes - self.used_bytes)


class GpuProbe(Protocol):
    """Reads GPU memory: per device, and what a set of processes holds."""

    @property
    def kind(self) -> str:
        """`nvml` or `ledger`: shown to operators next to the numbers."""

    def devices(self) -> list[GpuInfo]:
        """Every GPU, sorted by id."""

    def used_by_device(self) -> dict[int, int]:
        """GPU id -> bytes in use."""

    def used_by_pids(self, pids: Sequence[int]) -> int | None:
        """Bytes held by these processes on all GPUs; None where the probe cannot tell."""

    def used_by_pids_per_device(self, pids: Sequence[int]) -> dict[int, int] | None:
        """GPU id -> bytes these processes hold there; None where the probe cannot tell."""

    def telemetry(self) -> list[GpuTelemetry]:
        """Every GPU's memory, utilisation, temperature and power now, sorted by id."""


def _load_nvml() -> Any:
    """Import `pynvml` and initialise NVML, or raise GpuProbeError saying why not."""
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError as exc:
        raise GpuProbeError("pynvml (package nvidia-ml-py) is not installed") from exc
    try:
        nvml.nvmlInit()
    except Exception as exc:  # pynvml.NVMLError (no driver, no device) derives from Exception
        raise GpuProbeError(f"NVML did not initialise: {exc}") from exc
    return nvml


class NvmlProbe:
    """GPU memory through NVML. Construct it only where `NvmlProbe.available()` is true."""

    kind = "nvml"

    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml: Any = nvml if nvml is not None else _load_nvml()

    @classmethod
    def available(cls) -> bool:
        """True when pynvml imports and NVML initialises (a driver and a GPU are present)."""
        try:
            nvml = _load_nvml()
        except GpuProbeError:
            return False
        # nvmlInit counts references; give back the one this check took. A failed shutdown
        # after a successful init changes nothing about availability.
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
        return True

    def _handles(self) -> list[tuple[int, Any]]:
        count = int(self._nvml.nvmlDeviceGetCount())
        return [(index, self._nvml.nvmlDeviceGetHandleByIndex(index)) for index in range(count)]

    def devices(self) -> list[GpuInfo]:
        try:
            infos = []
            for index, handle in self._handles():
                total, used = nvml_memory(self._nvml, handle)
                name = nvml_text(self._nvml.nvmlDeviceGetName(handle))
                infos.append(GpuInfo(index, name, total, used))
        except Exception as exc:
            raise GpuProbeError(f"NVML query failed: {exc}") from exc
        return infos

    def used_by_device(self) -> dict[int, int]:
        return {gpu.id: gpu.used_bytes for gpu in self.devices()}

    def _running(self, handle: Any) -> list[Any]:
        processes: list[Any] = []
        for query in (
            "nvmlDeviceGetComputeRunningProcesses",
            "nvmlDeviceGetGraphicsRunningProcesses",
        ):
            function = getattr(self._nvml, query, None)
            if function is not None:
                processes.extend(function(handle))
        return processes

    def used_by_pids(self, pids: Sequence[int]) -> int | None:
        """Bytes the processes hold; None when NVML lists one of them without a figure.

        NVML reports host pids: inside a container with its own pid namespace nothing
        matches and the answer is 0. vLLM keeps its weights in child processes (EngineCore,
        tensor-parallel workers), so pass the whole tree (`process_tree`).
        """
        per_device = self.used_by_pids_per_device(pids)
        return None if per_device is None else sum(per_device.values())

    def used_by_pids_per_device(self, pids: Sequence[int]) -> dict[int, int] | None:
        """GPU index -> bytes the processes hold there (GPUs where they hold nothing left
        out); None when NVML lists one of them without a figure."""
        wanted = set(pids)
        held: dict[int, int] = {}
        try:
            for index, handle in self._handles():
                for process in self._running(handle):
                    if int(process.pid) not in wanted:
                        continue
                    used = getattr(process, "usedGpuMemory", None)
                    if used is None:  # NVML_VALUE_NOT_AVAILABLE (e.g. Windows WDDM, some vGPUs)
                        return None
                    held[index] = held.get(index, 0) + int(used)
        except Exception as exc:
            raise GpuProbeError(f"NVML query failed: {exc}") from exc
        return held

    def telemetry(self) -> list[GpuTelemetry]:
        """Each GPU through NVML; a figure the device does not report is None."""
        try:
            return [read_nvml(self._nvml, index, handle) for index, handle in self._handles()]
        except Exception as exc:
            raise GpuProbeError(f"NVML query failed: {exc}") from exc


class LedgerProbe:
    """Simulated GPU memory from the `llmux-sim` ledger; dead or recycled pids are ignored."""

    kind = "ledger"

    def __init__(
        self,
        ledger_dir: Path | str,
        *,
        capacity_bytes: int = DEFAULT_SIMULATED_CAPACITY,
        gpu_ids: Iterable[int] = (),
    ) -> None:
        self.ledger_dir = Path(ledger_dir)
        self.capacity_bytes = capacity_bytes
        self._configured_ids = frozenset(gpu_ids)

    def devices(self) -> list[GpuInfo]:
        """Configured GPU ids plus every id an entry ever named (alive or not), sorted.

        A GPU stays listed after its last engine exits, so the list does not flicker.
        """
        used = read_ledger(self.ledger_dir)
        seen = {
            gpu
            for entry in ledger_entries(self.ledger_dir, include_dead=True)
            for gpu in entry.gpu_ids
        }
        ids = sorted(seen | set(used) | self._configured_ids)
        return [
            GpuInfo(gpu, f"simulated GPU {gpu}", self.capacity_bytes, used.get(gpu, 0))
            for gpu in ids
        ]

    def used_by_device(self) -> dict[int, int]:
        return {gpu.id: gpu.used_bytes for gpu in self.devices()}

    def used_by_pids(self, pids: Sequence[int]) -> int | None:
        """What the ledger says these processes hold; None when some of them live but none
        reports to it: no simulator, so no probe applies (a real vLLM on a CPU host). The
        memory of processes that are all gone is 0."""
        per_device = self.used_by_pids_per_device(pids)
        return None if per_device is None else sum(per_device.values())

    def used_by_pids_per_device(self, pids: Sequence[int]) -> dict[int, int] | None:
        """GPU id -> what the ledger says these processes hold there; None as for
        `used_by_pids`, and nothing for processes that are all gone."""
        wanted = set(pids)
        reported = [entry for entry in ledger_entries(self.ledger_dir) if entry.pid in wanted]
        if not reported:
            return None if any(_running(pid) for pid in wanted) else {}
        held: dict[int, int] = {}
        for entry in reported:
            for gpu, nbytes in entry.bytes_per_gpu().items():
                held[gpu] = held.get(gpu, 0) + nbytes
        return held

    def telemetry(self) -> list[GpuTelemetry]:
        """Each simulated GPU: its memory, the busiest live engine on it as its utilisation
        (a GPU is busy while any of its processes runs a kernel), power and temperature
        made to follow (`gpu_telemetry.simulated`)."""
        busy: dict[int, int] = {}
        for entry in ledger_entries(self.ledger_dir):
            for gpu in entry.gpu_ids or (0,):
                busy[gpu] = max(busy.get(gpu, 0), entry.utilization)
        return [
            simulated(
                gpu.id,
                gpu.name,
                total=gpu.total_bytes,
                used=gpu.used_bytes,
                utilization=busy.get(gpu.id, 0),
            )
            for gpu in self.devices()
        ]


NVIDIA_DRIVER_VERSION = Path("/proc/driver/nvidia/version")


@functools.cache
def host_has_nvidia_gpu() -> bool:
    """Whether this host has an NVIDIA driver and GPU (the driver's /proc entry, or NVML).

    The driver's entry answers without nvidia-ml-py installed; it is what vLLM's CUDA build
    needs as well. Cached: a host does not grow a GPU while llmux runs.
    """
    return NVIDIA_DRIVER_VERSION.exists() or NvmlProbe.available()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except VANISHED:
        return False
    except psutil.Error:
        return True  # there, but not ours to read


def detect_probe(
    ledger_dir: Path | str, *, capacity_bytes: int = DEFAULT_SIMULATED_CAPACITY
) -> GpuProbe:
    """NVML where it works, else the simulator ledger under `ledger_dir`.

    On a GPU host NVML wins, so simulated engines started there are not counted: their
    memory is fictional and would only confuse the real figures.
    """
    try:
        return NvmlProbe()
    except GpuProbeError:
        return LedgerProbe(ledger_dir, capacity_bytes=capacity_bytes)


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive now (empty when `pid` is gone)."""
    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except VANISHED:
        return []


def gpu_groups(models: Mapping[str, Sequence[int]]) -> dict[str, str]:
    """Model name -> GPU group key; models of one group switch one at a time.

    Models whose GPU id sets intersect share a group, transitively (0,1 and 1,2 and 2,3 are
    one group even though 0,1 and 2,3 are disjoint). A model without `gpu_ids` runs on all
    GPUs, so it intersects every model: as soon as one model leaves `gpu_ids` empty, every
    model is in the single group `gpu:all`. Otherwise a group's key is `gpu:` and its sorted
    ids (`gpu:0,1`). The result depends only on the mapping's content, not its order.
    """
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        root = node
        while parent[root] != root:
            root = parent[root]
        while parent[node] != root:  # path compression
            parent[node], node = root, parent[node]
        return root

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)  # the smaller root wins: order-independent

    # Nodes are models ("m:" + name) and GPUs ("g:" + id, or "g:all"); a model joins its GPUs.
    for name, ids in models.items():
        model_node = f"m:{name}"
        parent.setdefault(model_node, model_node)
        for gpu_node in [f"g:{gpu}" for gpu in ids] or ["g:all"]:
            parent.setdefault(gpu_node, gpu_node)
            union(model_node, gpu_node)
    if "g:all" in parent:
        return dict.fromkeys(models, ALL_GPUS)

    component_ids: dict[str, set[int]] = {}
    for name, ids in models.items():
        component_ids.setdefault(find(f"m:{name}"), set()).update(ids)
    return {
        name: "gpu:" + ",".join(str(gpu) for gpu in sorted(component_ids[find(f"m:{name}")]))
        for name in models
    }
