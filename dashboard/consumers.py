"""`/ws/status/`: a snapshot on (re)connect, then live snapshots and followed log lines."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from dashboard import engine_logs
from dashboard.live import GROUP, broadcaster
from dashboard.payloads import (
    LogMessage,
    SnapshotEvent,
    SnapshotMessage,
    follow_request,
    log_message,
    snapshot_message,
)
from models_app import snapshot
from models_app.models import ModelDefinition
from models_app.services.engines import engine_log_path


def _log_path(name: str) -> str | None:
    model = ModelDefinition.objects.filter(name=name).first()
    return str(engine_log_path(model)) if model else None


class StatusConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Only for logged-in users (the Origin is checked by the router's validator)."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        await self.accept()
        self._follow: asyncio.Task[None] | None = None
        await self.channel_layer.group_add(GROUP, self.channel_name)
        broadcaster().subscribe()
        await self._send(snapshot_message(await sync_to_async(snapshot.status_snapshot)()))

    async def disconnect(self, code: int) -> None:
        if getattr(self, "_follow", None) is not None:
            self._follow.cancel()  # type: ignore[union-attr]
        if self.channel_layer is not None:
            await self.channel_layer.group_discard(GROUP, self.channel_name)
            broadcaster().unsubscribe()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        follow = follow_request(text_data)
        if follow is None:
            return
        if self._follow is not None:
            self._follow.cancel()
        path = await sync_to_async(_log_path)(follow["follow_log"])
        if path is not None:
            tail = self._tail(path, follow["offset"])
            self._follow = asyncio.get_running_loop().create_task(tail)

    async def status_snapshot(self, event: SnapshotEvent) -> None:
        await self._send(snapshot_message(event["snapshot"]))

    async def _send(self, message: SnapshotMessage | LogMessage) -> None:
        await self.send(text_data=json.dumps(message))

    async def _tail(self, path: str, offset: int) -> None:
        """Send the lines appended to the engine log after `offset`."""
        async for lines, position in engine_logs.follow(path, offset):
            at = datetime.now(UTC).isoformat(timespec="seconds")
            await self._send(log_message(lines, position, at))
