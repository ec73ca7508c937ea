"""The GPU ledger: what engines write while they hold "GPU" memory, and what readers trust."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from llmux_site.core.gpu_ledger import LedgerWriter, ledger_entries, read_ledger
from tests.simulator.harness import SimLauncher


def test_the_ledger_follows_the_engines_gpu_bytes(sim: SimLauncher) -> None:
    engine = sim.start()
    held = engine.state()["gpu_bytes"]
    assert held == 64 * 1024 + 256 * 1024
    assert read_ledger(sim.ledger_dir) == {0: held}
    [entry] = ledger_entries(sim.ledger_dir)
    assert (entry.pid, entry.model, entry.alive) == (engine.pid, "llmux-sim/test", True)
    for level in (1, 2):
        engine.post(f"/sleep?level={level}")
        assert read_ledger(sim.ledger_dir) == {0: 0}
        engine.post("/wake_up")
        assert read_ledger(sim.ledger_dir) == {0: held}


def test_a_clean_exit_removes_the_entry(sim: SimLauncher) -> None:
    engine = sim.start()
    assert (sim.ledger_dir / f"{engine.pid}.json").exists()
    engine.proc.terminate()
    assert engine.wait_exit(5) == 0
    assert not (sim.ledger_dir / f"{engine.pid}.json").exists()


def test_a_crashed_engines_entry_is_ignored(sim: SimLauncher) -> None:
    engine = sim.start("--sim-fault", "crash=request")
    with pytest.raises(OSError):  # the connection dies with the engine
        engine.post("/v1/completions", {"prompt": "x"})
    assert engine.wait_exit(5) == 1
    assert (sim.ledger_dir / f"{engine.pid}.json").exists()
    assert read_ledger(sim.ledger_dir) == {}
    [stale] = ledger_entries(sim.ledger_dir, include_dead=True)
    assert (stale.pid, stale.alive) == (engine.pid, False)


def test_tensor_parallel_bytes_are_spread_over_the_visible_gpus(sim: SimLauncher) -> None:
    engine = sim.start("-tp", "2", env={"CUDA_VISIBLE_DEVICES": "3,5,6"})
    held = engine.state()["gpu_bytes"]
    assert read_ledger(sim.ledger_dir) == {3: held // 2, 5: held // 2}


def _write_entry(directory: Path, pid: int, create_time: float, nbytes: int) -> None:
    record = {"pid": pid, "create_time": create_time, "model": "m", "gpu_ids": [0], "bytes": nbytes}
    (directory / f"{pid}.json").write_text(json.dumps(record))


def test_read_ledger_ignores_dead_and_recycled_pids(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = psutil.Process()
    _write_entry(tmp_path, dead.pid, me.create_time(), 111)
    _write_entry(tmp_path, os.getpid(), me.create_time() - 3600, 222)  # pid reused since
    (tmp_path / "junk.json").write_text("{not json")
    assert read_ledger(tmp_path) == {}
    _write_entry(tmp_path, os.getpid(), me.create_time(), 333)
    assert read_ledger(tmp_path) == {0: 333}
    assert len(ledger_entries(tmp_path, include_dead=True)) == 2


def test_the_writer_rewrites_atomically_and_only_on_change(tmp_path: Path) -> None:
    writer = LedgerWriter(tmp_path / "ledger", model="m", gpu_ids=[1])
    writer.update(10)
    first = writer.path.stat().st_mtime_ns
    writer.update(10)
    assert writer.path.stat().st_mtime_ns == first
    writer.update(20)
    assert read_ledger(tmp_path / "ledger") == {1: 20}
    assert [p.name for p in (tmp_path / "ledger").iterdir()] == [f"{os.getpid()}.json"]
    writer.remove()
    assert read_ledger(tmp_path / "ledger") == {}


def test_a_missing_ledger_directory_reads_as_empty(tmp_path: Path) -> None:
    assert read_ledger(tmp_path / "absent") == {}


def test_the_ledger_reader_imports_neither_django_nor_aiohttp() -> None:
    code = (
        "import sys, llmux_site.core.gpu_ledger as l; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'aiohttp'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
