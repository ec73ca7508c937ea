"""The simulated-GPU ledger: one JSON file per engine process saying how much "GPU" it holds.

Core owns the format because both sides of it are ours: the simulator (`llmux-sim`) writes
its entry through `LedgerWriter`, and where NVML is absent the GPU probe (`gpu.LedgerProbe`)
reads them all. So this module stays pure: standard library and psutil only (no Django, no
aiohttp), and it is the one module of core the simulator imports besides `openai_errors`.

File `<dir>/<pid>.json`: {"pid", "create_time", "model", "gpu_ids", "bytes", "utilization"};
`bytes` is the process's total, spread evenly over its `gpu_ids` (tensor-parallel shards) when
read back; `utilization` is the percent of the last second during which the engine had a
request in progress (what NVML reports for a real GPU; 0 when absent, as older writers
left it).
The directory is LLMUX_SIM_LEDGER_DIR (llmux sets it for the engines it starts), else a
per-user one under the temporary directory, never under /dev/shm.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from llmux_site.core.processes import UNREADABLE

# psutil derives create_time from boot time plus clock ticks; two readers can disagree by a
# tick or so, while a recycled pid differs by far more.
CREATE_TIME_TOLERANCE_S = 0.5
# /dev/shm is swept of stale files around CRIU dumps: a ledger kept there could vanish.
SHM = Path("/dev/shm")  # noqa: S108 - named only to keep the ledger out of it


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One engine process's claim on simulated GPU memory."""

    pid: int
    create_time: float
    model: str
    gpu_ids: tuple[int, ...]
    bytes: int
    alive: bool
    utilization: int = 0

    def bytes_per_gpu(self) -> dict[int, int]:
        """Split `bytes` evenly over the entry's GPUs; the first GPU takes the remainder."""
        ids = self.gpu_ids or (0,)
        share, rest = divmod(self.bytes, len(ids))
        return {gpu: share + (rest if i == 0 else 0) for i, gpu in enumerate(ids)}


def default_ledger_dir() -> Path:
    """LLMUX_SIM_LEDGER_DIR, else $TMPDIR/llmux-sim-ledger-<uid> (never under /dev/shm)."""
    configured = os.environ.get("LLMUX_SIM_LEDGER_DIR")
    if configured:
        return Path(configured)
    base = Path(tempfile.gettempdir())
    if is_under_shm(base):
        base = Path("/tmp")  # noqa: S108 - a fixed fallback outside /dev/shm is the point
    return base / f"llmux-sim-ledger-{os.getuid()}"


def is_under_shm(path: Path) -> bool:
    """True for /dev/shm and anything below it (after resolving links)."""
    return path.resolve().is_relative_to(SHM)


def process_create_time(pid: int) -> float | None:
    """The process's start time as psutil reports it, or None when it is gone or a zombie."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except UNREADABLE:
        return None


class LedgerWriter:
    """Keeps this process's ledger file equal to the bytes it holds and how busy it is;
    rewrites only on change."""

    def __init__(self, directory: Path, *, model: str, gpu_ids: Sequence[int]) -> None:
        self.directory = directory
        self.pid = os.getpid()
        self.path = directory / f"{self.pid}.json"
        self._model = model
        self._gpu_ids = list(gpu_ids)
        self._create_time = process_create_time(self.pid) or 0.0
        self._held = 0
        self._utilization = 0
        self._last: tuple[int, int] | None = None

    def update(self, held_bytes: int) -> None:
        """Record `held_bytes`; a no-op when nothing changed since the last write."""
        self._write(held_bytes, self._utilization)

    def report_utilization(self, percent: int) -> None:
        """Record how busy the engine was lately (0-100); a no-op when unchanged."""
        self._write(self._held, percent)

    def _write(self, held_bytes: int, utilization: int) -> None:
        if (held_bytes, utilization) == self._last:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        record = {
            "pid": self.pid,
            "create_time": self._create_time,
            "model": self._model,
            "gpu_ids": self._gpu_ids,
            "bytes": held_bytes,
            "utilization": utilization,
        }
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{self.pid}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes it 0600; GPU probes may run as another user
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle)
            # rename is atomic: a reader sees the old record or the new one, never half of one.
            Path(tmp).replace(self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._held, self._utilization = held_bytes, utilization
        self._last = (held_bytes, utilization)

    def remove(self) -> None:
        """Delete this process's entry (on clean exit)."""
        self.path.unlink(missing_ok=True)
        self._last = None


def _parse_entry(path: Path) -> LedgerEntry | None:
    try:
        record = json.loads(path.read_text())
        pid = int(record["pid"])
        create_time = float(record["create_time"])
        entry_bytes = int(record["bytes"])
        gpu_ids = tuple(int(gpu) for gpu in record.get("gpu_ids") or [0])
        model = str(record.get("model", ""))
        utilization = int(record.get("utilization") or 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    actual = process_create_time(pid)
    alive = actual is not None and abs(actual - create_time) <= CREATE_TIME_TOLERANCE_S
    return LedgerEntry(pid, create_time, model, gpu_ids, entry_bytes, alive, utilization)


def ledger_entries(directory: Path | str, *, include_dead: bool = False) -> list[LedgerEntry]:
    """Readable entries sorted by pid; dead or recycled pids only when `include_dead`."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    entries = [_parse_entry(path) for path in folder.glob("*.json")]
    return sorted(
        (e for e in entries if e is not None and (include_dead or e.alive)),
        key=lambda e: e.pid,
    )


def read_ledger(directory: Path | str) -> dict[int, int]:
    """GPU id -> bytes held by live simulated engines (dead or recycled pids are ignored)."""
    held: dict[int, int] = {}
    for entry in ledger_entries(directory):
        for gpu, nbytes in entry.bytes_per_gpu().items():
            held[gpu] = held.get(gpu, 0) + nbytes
    return held
