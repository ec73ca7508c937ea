"""Invariants the fuzz and chaos scenarios check against a running llmux.

- One GPU holder: at most one model of a GPU group is awake (its engine holds the GPU),
  sampled from the database and, independently, from the simulators' GPU ledger.
- One process per model: every engine process of a model is the one the database records.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from llmux_site.core.gpu_ledger import CREATE_TIME_TOLERANCE_S, process_create_time

# The states in which an engine holds its GPU group (or is about to): draining still
# serves, starting allocates. Two of them at once means two engines on one GPU.
GPU_HOLDING_STATES = frozenset({"starting", "running", "draining"})
# The states in which the database says a process exists.
PROCESS_STATES = frozenset({"starting", "running", "draining", "sleeping", "suspended"})
SIMULATOR_PROGRAMS = ("llmux_site.simulator", "llmux-sim")


@dataclass(frozen=True)
class Holding:
    """A live engine that the ledger says holds GPU bytes, and when we know it did."""

    pid: int
    model: str
    written: float  # the entry's mtime: it held the bytes from (about) then ...
    seen: float  # ... at least until this moment (file-system clock, before the read)


def held_from_ledger(ledger_dir: Path, clock_file: Path) -> list[Holding]:
    """Live engines whose ledger entry holds bytes > 0 at the time of reading.

    Times come from the file system's own clock (the mtime of `clock_file`, touched just
    before each read), so they compare exactly with the entries' mtimes.
    """
    holdings = []
    for path in sorted(ledger_dir.glob("*.json")):
        clock_file.touch()
        seen = clock_file.stat().st_mtime
        try:
            with path.open("rb") as handle:
                written = os.fstat(handle.fileno()).st_mtime
                record = json.loads(handle.read())
            pid, held, created = int(record["pid"]), int(record["bytes"]), record["create_time"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # replaced or removed under us: the next sample reads it again
        actual = process_create_time(pid)
        alive = actual is not None and abs(actual - float(created)) <= CREATE_TIME_TOLERANCE_S
        if held > 0 and alive:
            holdings.append(Holding(pid, str(record.get("model", "")), written, seen))
    return holdings


def overlapping(holdings: list[Holding]) -> list[tuple[Holding, Holding]]:
    """Pairs of engines that both held GPU bytes at one same moment.

    Entry A held bytes during [A.written, A.seen]; two such intervals overlap when the later
    start is before the earlier end. Strict, so a tick of the coarse clock is never blamed.
    """
    pairs = []
    for i, first in enumerate(holdings):
        for second in holdings[i + 1 :]:
            if first.pid != second.pid and max(first.written, second.written) < min(
                first.seen, second.seen
            ):
                pairs.append((first, second))
    return pairs


@dataclass
class GpuSampler:
    """Samples engine states and the GPU ledger every `interval` seconds in a thread."""

    database: Path
    ledger_dir: Path
    interval: float = 0.05
    samples: int = 0
    awake_seen: int = 0
    violations: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> GpuSampler:
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        clock_file = self.ledger_dir.parent / ".sampler-clock"
        with contextlib.closing(sqlite3.connect(self.database, timeout=10)) as db:
            while not self._stop.wait(self.interval):
                try:
                    self._sample(db, clock_file)
                except Exception as exc:  # a sampler that dies silently proves nothing
                    self.violations.append(f"sampler failed: {exc!r}")
                    return

    def _sample(self, db: sqlite3.Connection, clock_file: Path) -> None:
        # The scenarios put every model on one GPU group (no gpu_ids), so the whole table is
        # one group: stricter than trusting the gpu_group column the code under test writes.
        rows = db.execute(
            "SELECT m.name, r.state FROM models_app_engineruntime r "
            "JOIN models_app_modeldefinition m ON m.id = r.model_id"
        ).fetchall()
        awake = [f"{name}={state}" for name, state in rows if state in GPU_HOLDING_STATES]
        if len(awake) > 1:
            self.violations.append(f"two models awake on one GPU group: {awake}")
        self.awake_seen += bool(awake)
        for first, second in overlapping(held_from_ledger(self.ledger_dir, clock_file)):
            self.violations.append(f"two engines hold GPU memory at once: {first} and {second}")
        self.samples += 1


def simulator_processes(model_path: str) -> list[psutil.Process]:
    """Live simulator processes serving `model_path` (from their command lines)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if proc.info["status"] == psutil.STATUS_ZOMBIE or model_path not in cmdline:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(program in part for part in cmdline for program in SIMULATOR_PROGRAMS):
            found.append(proc)
    return found


def recorded_engines(database: Path) -> dict[str, tuple[str, int | None, str]]:
    """Model name -> (state, recorded pid, model_path) from the database."""
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as db:
        rows = db.execute(
            "SELECT m.name, r.state, r.pid, m.model_path FROM models_app_modeldefinition m "
            "LEFT JOIN models_app_engineruntime r ON r.model_id = m.id"
        ).fetchall()
    return {name: (state or "not_started", pid, path) for name, state, pid, path in rows}


def one_process_per_model(database: Path) -> list[str]:
    """Problems: a model with more than one engine, or one the database does not record."""
    problems = []
    for name, (state, pid, model_path) in recorded_engines(database).items():
        pids = sorted(proc.pid for proc in simulator_processes(model_path))
        expected = [pid] if state in PROCESS_STATES and pid is not None else []
        if pids != expected:
            problems.append(f"{name} ({state}, recorded pid {pid}) has engine processes {pids}")
    return problems


def wait_until(
    condition: Callable[[], object],
    *,
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.05,
) -> None:
    """Poll `condition()` until it is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            described = what if isinstance(what, str) else what()
            raise AssertionError(f"timed out after {timeout}s waiting for {described}")
        time.sleep(interval)


def descendants(pid: int) -> Iterable[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
