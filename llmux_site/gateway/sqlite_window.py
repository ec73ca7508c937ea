"""A key's requests-per-minute window in a SQLite file, shared by a host's web processes.

The embedded profile has no Redis, yet `llmux serve` may run several web processes on
one host (llmux_site/serve.py): each key's window must count the requests of all of
them, or every limit would be multiplied by their number. One table holds the admission
times of the last minute; trimming, counting and adding run in one `BEGIN IMMEDIATE`
transaction, so two processes cannot both take the last slot. The time is the wall
clock, which every process of one host shares.

Only keys with a limit come here, and an admission costs a local transaction (about
0.1 ms, on the event loop: a thread hop would cost about as much). The file needs no
durability: `synchronous=OFF`, and a crash loses at most the last minute's counts.
When the file cannot be written in time the request is admitted and a warning logged
(at most once a minute), as `RedisWindow` does when Redis does not answer.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from llmux_site.gateway.keys import WINDOW
from llmux_site.logs import Throttle

log = logging.getLogger("llmux.gateway")

BUSY_TIMEOUT_MS = 500  # a request waits this long for another process's admission
WARN_EVERY = 60.0
# `admissions` is the log of the last minute; `counts` keeps each key's number of rows in
# it, so that an admission never counts a minute of rows (80,000 at 1,300 requests/s,
# which made every admission take milliseconds while holding the file's write lock).
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS admissions (key INTEGER NOT NULL, at REAL NOT NULL);"
    "CREATE INDEX IF NOT EXISTS admissions_key_at ON admissions (key, at);"
    "CREATE TABLE IF NOT EXISTS counts (key INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
)


class SqliteWindow:
    """`RateWindow` over a SQLite file that every web process of the host opens."""

    def __init__(
        self, path: Path, window: float = WINDOW, clock: Callable[[], float] = time.time
    ) -> None:
        self.path, self.window, self.clock = path, window, clock
        self._db: sqlite3.Connection | None = None
        self._warnings = Throttle(WARN_EVERY)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = OFF")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def admit(self, key_id: int, rpm: int) -> float | None:
        try:
            return self._admit(key_id, rpm)
        except sqlite3.Error as exc:
            self._abandon()
            if self._warnings.ready():
                log.warning("gateway: rate limits not enforced, %s: %s", self.path, exc)
            return None

    def _admit(self, key_id: int, rpm: int) -> float | None:
        db = self._connection()
        now = self.clock()
        db.execute("BEGIN IMMEDIATE")
        try:
            left = db.execute(
                "DELETE FROM admissions WHERE key = ? AND at <= ?", (key_id, now - self.window)
            ).rowcount
            # fetchall: a RETURNING statement left unfinished would hold its transaction.
            counted = db.execute(
                "UPDATE counts SET n = n - ? WHERE key = ? RETURNING n", (left, key_id)
            ).fetchall()
            if counted and counted[0][0] >= rpm:
                (oldest,) = db.execute(
                    "SELECT min(at) FROM admissions WHERE key = ?", (key_id,)
                ).fetchone()
                return float(oldest) + self.window - now
            db.execute("INSERT INTO admissions (key, at) VALUES (?, ?)", (key_id, now))
            db.execute(
                "INSERT INTO counts (key, n) VALUES (?, 1)"
                " ON CONFLICT (key) DO UPDATE SET n = n + 1",
                (key_id,),
            )
            return None
        finally:
            db.execute("COMMIT")

    def _abandon(self) -> None:
        """Close the connection (after an error: no transaction is left open); the next
        call reconnects."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    async def close(self) -> None:
        self._abandon()
