"""Live status for the dashboard: host-bus notices become snapshots on the channel layer.

One broadcaster per web process listens to the host bus (engine states, queued work,
checkpoint progress, registry changes, probes) and, a moment after a burst of notices, sends
one fresh snapshot to the `status` group; a slow tick also carries what has no notice (in
flight counts, GPU memory, uptime). Snapshots are read from the database, the truth, so a
lost notice costs at most one tick.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from dashboard.payloads import snapshot_event
from models_app import protocol
from models_app.snapshot import status_snapshot

log = logging.getLogger(__name__)

GROUP = "status"
SETTLE = 0.02  # gather a burst of notices into one snapshot
TICK = 1.0


class Broadcaster:
    def __init__(self) -> None:
        self.subscribers = 0
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def subscribe(self) -> None:
        self.subscribers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def unsubscribe(self) -> None:
        self.subscribers = max(0, self.subscribers - 1)

    def _on_message(self, data: bytes) -> None:
        self._changed.set()

    async def _run(self) -> None:
        listener = await protocol.bus().listen(self._on_message)
        layer = get_channel_layer()
        try:
            while self.subscribers > 0:
                try:
                    await asyncio.wait_for(self._changed.wait(), TICK)
                    await asyncio.sleep(SETTLE)
                except TimeoutError:
                    pass
                self._changed.clear()
                try:
                    state = await sync_to_async(status_snapshot)()
                except Exception:
                    log.exception("dashboard snapshot failed")
                    continue
                if layer is not None:
                    await layer.group_send(GROUP, snapshot_event(state))
        finally:
            listener.close()


_broadcaster: Broadcaster | None = None


def broadcaster() -> Broadcaster:
    global _broadcaster
    if _broadcaster is None:
        _broadcaster = Broadcaster()
    return _broadcaster
