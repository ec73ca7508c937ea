"""`/ws/status/`: a snapshot on (re)connect, then live snapshots and followed log lines."""

from __future__ import annotations

import asyncio
import json
import os

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from dashboard.live import GROUP, broadcaster
from dashboard.payloads import (
    LogMessage,
    SnapshotEvent,
    SnapshotMessage,
    followed_model,
    log_message,
    snapshot_message,
)
from models_app import snapshot
from models_app.models import ModelDefinition
from models_app.services.engines import engine_log_path

LOG_POLL = 0.5
LOG_CHUNK = 64 * 1024


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
        name = followed_model(text_data)
        if name is not None:
            if self._follow is not None:
                self._follow.cancel()
            path = await sync_to_async(_log_path)(name)
            if path is not None:
                self._follow = asyncio.get_running_loop().create_task(self._tail(path))

    async def status_snapshot(self, event: SnapshotEvent) -> None:
        await self._send(snapshot_message(event["snapshot"]))

    async def _send(self, message: SnapshotMessage | LogMessage) -> None:
        await self.send(text_data=json.dumps(message))

    async def _tail(self, path: str) -> None:
        """Send lines appended to the engine log from now on."""
        position = await asyncio.to_thread(_size, path)
        while True:
            await asyncio.sleep(LOG_POLL)
            size = await asyncio.to_thread(_size, path)
            if size < position:
                position = 0  # the log was rotated or truncated
            if size > position:
                chunk = await asyncio.to_thread(
                    _read, path, position, min(size, position + LOG_CHUNK)
                )
                position += len(chunk)
                lines = chunk.decode(errors="replace").splitlines()
                if lines:
                    await self._send(log_message(lines))


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read(path: str, start: int, end: int) -> bytes:
    with open(path, "rb") as log:
        log.seek(start)
        return log.read(end - start)
