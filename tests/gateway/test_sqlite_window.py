"""The embedded profile's rate window: one SQLite file, shared by a host's web processes."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from llmux_site.gateway.sqlite_window import SqliteWindow
from tests.gateway.conftest import REPO_ROOT


def test_it_slides_over_the_last_minute_per_key_as_the_local_window_does(tmp_path: Path) -> None:
    now = [1000.0]
    window = SqliteWindow(tmp_path / "rate.sqlite3", clock=lambda: now[0])

    async def admit(key_id: int = 7) -> float | None:
        return await window.admit(key_id, 2)

    async def go() -> None:
        assert [await admit(), await admit()] == [None, None]
        now[0] += 0.5
        assert await admit() == pytest.approx(59.5)  # the first request leaves in 59.5 s
        assert await admit(key_id=8) is None  # another key has its own minute
        now[0] += 59.5  # the window moved past both earlier requests
        assert [await admit(), await admit()] == [None, None]
        assert await admit() == pytest.approx(60.0)
        await window.close()

    asyncio.run(go())


ADMIT_MANY = """
import asyncio, sys
from pathlib import Path
from llmux_site.gateway.sqlite_window import SqliteWindow
from tests.gateway.conftest import REPO_ROOT
async def go():
    window = SqliteWindow(Path(sys.argv[1]))
    admitted = [await window.admit(42, 50) is None for _ in range(40)]
    await window.close()
    print(sum(admitted))
asyncio.run(go())
"""


def test_processes_at_once_share_one_count_and_never_pass_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "rate.sqlite3"
    SqliteWindow(path)._connection().close()  # the schema, before the race
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", ADMIT_MANY, str(path)], cwd=REPO_ROOT, stdout=subprocess.PIPE
        )
        for _ in range(4)
    ]
    admitted = [int(worker.communicate(timeout=60)[0]) for worker in workers]
    # 160 requests for a limit of 50 from four processes at once: exactly 50 pass.
    assert sum(admitted) == 50, admitted


def test_a_file_it_cannot_write_admits_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rate.sqlite3"
    window = SqliteWindow(path)
    asyncio.run(window.admit(1, 1))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the file past the busy wait
    try:
        with caplog.at_level(logging.WARNING, logger="llmux.gateway"):
            assert asyncio.run(window.admit(1, 1)) is None  # over the limit, yet admitted
            assert asyncio.run(window.admit(1, 1)) is None
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    warnings = [r for r in caplog.records if "rate limits not enforced" in r.message]
    assert len(warnings) == 1
    wait = asyncio.run(window.admit(1, 1))  # counted again: the first admission holds the slot
    assert wait is not None and 50 < wait <= 60
