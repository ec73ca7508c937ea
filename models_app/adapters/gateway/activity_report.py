"""What a web process writes of its gateway's per-request activity, off the request path.

The gateway's `Activity` keeps the requests in flight and the finished ones in memory; one
background task of the web process writes the finished ones in one batch a second
(`FLUSH_EVERY`), rewrites the process's `LiveRequests` row when what is in flight changed
(and every `LIVE_HEARTBEAT` seconds while anything is, so readers can tell a live report
from a dead process's), prunes to the retention settings, and hears operators' cancels
and the capture switch on the host bus. No request ever waits for any of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError

from llmux_site.gateway.activity import Activity
from models_app import protocol
from models_app.adapters.gateway.db_thread import DbThread, stop_task
from models_app.models import ActivitySettings
from models_app.services import activity as activity_service

log = logging.getLogger(__name__)

# A second of batching: at 1,200 requests/s one insert of 1,200 rows costs this process
# a few percent of a core, where a write per request would more than double a request's
# cost (one ORM statement is 0.6 to 0.9 ms here, docs/SWITCHING.md).
FLUSH_EVERY = 1.0
LIVE_HEARTBEAT = 5.0  # readers ignore a report older than 3 heartbeats (selectors)
PRUNE_EVERY = 60.0
CAPTURE_READ_EVERY = 10.0  # the capture switch, if its bus notice was lost


def capture_setting() -> bool:
    """The admin's capture switch (off while the database is not migrated yet)."""
    try:
        return ActivitySettings.capture_on()
    except DatabaseError:
        return False


@dataclass
class ActivityReport:
    """Writes one web process's `Activity`: finished requests in batches, those in flight."""

    activity: Activity
    instance_id: str
    # Its own database thread: a batch insert never delays the gateway's state polls.
    db: DbThread = field(default_factory=DbThread)
    _task: asyncio.Task[None] | None = None
    _live_at: float = float("-inf")
    _pruned_at: float = float("-inf")
    _capture_at: float = 0.0

    def attach(self) -> None:
        """Start writing once the gateway's first request arrives (in the event loop)."""
        self.activity.on_first_use = self.start

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None
        with contextlib.suppress(Exception):
            await self.flush(time.monotonic())
        with contextlib.suppress(Exception):
            await self.db.run(activity_service.forget_live, self.instance_id)

    async def _run(self) -> None:
        listener = await protocol.bus().listen(self._on_message)
        self._capture_at = time.monotonic()
        try:
            while True:
                await asyncio.sleep(FLUSH_EVERY)
                try:
                    await self.flush(time.monotonic())
                except Exception:  # the loop must survive a database hiccup
                    log.exception("gateway activity flush failed")
        finally:
            listener.close()

    async def flush(self, now: float) -> None:
        """Write what finished since the last pass and, if due, what is in flight."""
        finished = self.activity.take_finished()
        if finished:
            try:
                await self.db.run(activity_service.write_finished, self.instance_id, finished)
            except BaseException:
                self.activity.put_back(finished)  # the next pass tries again (bounded)
                raise
        if self.activity.live_changed() or (
            self.activity.live and now - self._live_at >= LIVE_HEARTBEAT
        ):
            self._live_at = now
            rows = self.activity.live_rows()
            await self.db.run(activity_service.report_live, self.instance_id, os.getpid(), rows)
        if now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            await self.db.run(
                activity_service.prune,
                hours=settings.LLMUX_ACTIVITY_RETENTION_HOURS,
                max_rows=settings.LLMUX_ACTIVITY_MAX_REQUESTS,
            )
        if now - self._capture_at >= CAPTURE_READ_EVERY:
            self._capture_at = now
            self.activity.capture = await self.db.run(capture_setting)

    def _on_message(self, data: bytes) -> None:
        message = protocol.read(data)
        if isinstance(message, protocol.CancelRequest) and message.instance == self.instance_id:
            self.activity.cancel(message.request)
        elif isinstance(message, protocol.CaptureChanged):
            self.activity.capture = message.capture
