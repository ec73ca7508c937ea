"""GPU telemetry: utilisation, memory, temperature and power per GPU, and their recent history.

`GpuTelemetry` is one GPU read once: from NVML on a GPU host (`read_nvml`, called by
`gpu.NvmlProbe.telemetry`), or made up plausibly for a simulated GPU from what the simulated
engines report to their ledger (`simulated`, called by `gpu.LedgerProbe.telemetry`).
`TelemetryHistory` keeps the last few minutes of readings of whoever reads them. Also here,
as the other half of "what is held where": the host RAM a set of processes holds
(`resident_bytes`), which is what a sleeping engine keeps instead of GPU memory.

Pure core (standard library and psutil). A figure the device or driver does not give
(utilisation of a MIG slice, power on some boards) is None, never 0.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psutil

from llmux_site.core.processes import UNREADABLE

T = TypeVar("T")

# What a simulated GPU shows: an H100 SXM's board power limit, and idle and busy figures
# like those of one (about 70 W and 32 °C idle; a decode-bound engine draws well under the
# limit). Holding memory costs a little power and warmth too, so a loaded idle GPU differs
# from an empty one, as a real one does.
SIMULATED_POWER_LIMIT_W = 700.0
SIMULATED_IDLE_W = 70.0
SIMULATED_BUSY_W = 600.0
SIMULATED_MEMORY_W = 20.0
SIMULATED_IDLE_C = 32.0
SIMULATED_BUSY_C = 68.0
SIMULATED_MEMORY_C = 3.0

# The history the dashboard shows: five minutes, one reading every five seconds (60 points
# a GPU, a few KB a snapshot, sent every second to every open overview).
HISTORY_SPAN_S = 300
HISTORY_EVERY_S = 5


@dataclass(frozen=True, slots=True)
class GpuTelemetry:
    """One GPU read now: memory in bytes, utilisation in percent, °C, watts."""

    id: int
    name: str
    total_bytes: int
    used_bytes: int
    # Percent of the last sample period during which a kernel ran (NVML's definition).
    utilization: int | None
    temperature_c: int | None
    power_w: float | None
    power_limit_w: float | None


def _optional(read: Callable[[], T]) -> T | None:
    """A reading NVML may not support on this device (NVMLError_NotSupported, ...): None."""
    try:
        return read()
    except Exception:  # pynvml's NVMLError derives from Exception; any failure is "no figure"
        return None


def nvml_text(value: object) -> str:
    """A name NVML returned, as text."""
    # nvidia-ml-py returned bytes for names before 11.5 and str since.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def nvml_memory(nvml: Any, handle: Any) -> tuple[int, int]:
    """One GPU's (total, used) bytes as nvidia-smi shows them: NVML's v2 reading, where the
    library and driver have it, does not count what the driver reserves as used; else v1.

    On an H100 (driver 580) v1 read 480 MiB used on an idle GPU where v2 and nvidia-smi
    read 0, and 17,875 MiB under a load whose process held 17,386 MiB (v2: 17,395), which
    would show as "other" memory that nothing holds.
    """
    version = getattr(nvml, "nvmlMemory_v2", None)
    if version is not None:
        # A library or driver without v2 raises (NVMLError, TypeError): v1 then.
        with contextlib.suppress(Exception):
            memory = nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
            return int(memory.total), int(memory.used)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    return int(memory.total), int(memory.used)


def read_nvml(nvml: Any, index: int, handle: Any) -> GpuTelemetry:
    """One GPU through NVML. Memory and name must answer (or this raises); the rest may not."""
    total, used = nvml_memory(nvml, handle)
    temperature_sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
    return GpuTelemetry(
        id=index,
        name=nvml_text(nvml.nvmlDeviceGetName(handle)),
        total_bytes=total,
        used_bytes=used,
        utilization=_optional(lambda: int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
        temperature_c=_optional(
            lambda: int(nvml.nvmlDeviceGetTemperature(handle, temperature_sensor))
        ),
        # NVML answers in milliwatts.
        power_w=_optional(lambda: int(nvml.nvmlDeviceGetPowerUsage(handle)) / 1000),
        power_limit_w=_optional(lambda: int(nvml.nvmlDeviceGetEnforcedPowerLimit(handle)) / 1000),
    )


def simulated(gpu: int, name: str, *, total: int, used: int, utilization: int) -> GpuTelemetry:
    """A simulated GPU's telemetry: power and temperature follow its load and memory."""
    load = min(100, max(0, utilization)) / 100
    filled = min(1.0, used / total) if total > 0 else 0.0
    power = SIMULATED_IDLE_W + SIMULATED_MEMORY_W * filled
    power += (SIMULATED_BUSY_W - SIMULATED_IDLE_W) * load
    temperature = SIMULATED_IDLE_C + SIMULATED_MEMORY_C * filled
    temperature += (SIMULATED_BUSY_C - SIMULATED_IDLE_C) * load
    return GpuTelemetry(
        id=gpu,
        name=name,
        total_bytes=total,
        used_bytes=used,
        utilization=round(load * 100),
        temperature_c=round(temperature),
        power_w=round(power, 1),
        power_limit_w=SIMULATED_POWER_LIMIT_W,
    )


def resident_bytes(pids: Iterable[int]) -> int | None:
    """Host RAM (resident set) of these processes together; None when none could be read.

    A page two of them share (vLLM's workers map the same libraries) counts once for each:
    the sum is what the kernel would free at most if they all exited, an upper bound.
    Gone processes count 0.
    """
    total = 0
    readable = False
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
            readable = True
        except UNREADABLE:
            continue
    return total if readable else None


@dataclass(frozen=True, slots=True)
class GpuSeries:
    """One GPU's readings over time, oldest first, as parallel lists (compact in JSON)."""

    at: list[float] = field(default_factory=list)  # seconds since the epoch
    utilization: list[int | None] = field(default_factory=list)
    used_bytes: list[int] = field(default_factory=list)
    temperature_c: list[int | None] = field(default_factory=list)
    power_w: list[float | None] = field(default_factory=list)


class TelemetryHistory:
    """The last `span_s` seconds of readings, at most one per `every_s` slot; thread-safe.

    Readings arrive whenever someone reads the GPUs (each snapshot); only the first of
    each slot of `every_s` seconds is kept, so the history's resolution does not depend on
    how often that is. Where nobody read, the history has a gap, not made-up points.
    """

    def __init__(
        self,
        *,
        span_s: float = HISTORY_SPAN_S,
        every_s: float = HISTORY_EVERY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.span_s = span_s
        self.every_s = every_s
        self._clock = clock
        self._samples: deque[tuple[float, tuple[GpuTelemetry, ...]]] = deque(
            maxlen=int(span_s // every_s) + 1
        )
        self._lock = threading.Lock()

    def record(self, gpus: Sequence[GpuTelemetry]) -> None:
        """Keep this reading if it is the first of its slot."""
        now = self._clock()
        with self._lock:
            if self._samples and self._samples[-1][0] // self.every_s == now // self.every_s:
                return
            self._samples.append((now, tuple(gpus)))

    def series(self, gpu: int) -> GpuSeries:
        """GPU `gpu`'s readings of the last `span_s` seconds, oldest first."""
        since = self._clock() - self.span_s
        with self._lock:
            samples = [(at, gpus) for at, gpus in self._samples if at >= since]
        series = GpuSeries()
        for at, gpus in samples:
            reading = next((g for g in gpus if g.id == gpu), None)
            if reading is None:
                continue
            series.at.append(round(at, 3))
            series.utilization.append(reading.utilization)
            series.used_bytes.append(reading.used_bytes)
            series.temperature_c.append(reading.temperature_c)
            series.power_w.append(reading.power_w)
        return series
