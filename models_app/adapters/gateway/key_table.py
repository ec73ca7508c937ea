"""The web process's table of gateway API keys: read from the database, usage written back.

The keys' writers (create, revoke) are `models_app/services/api_keys.py`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.db.models import Count, F, Max
from django.utils import timezone

from llmux_site.gateway.keys import (
    Grant,
    KeyRecord,
    KeyTable,
    LocalWindow,
    RateWindow,
    rate_limited,
)
from llmux_site.gateway.sqlite_window import SqliteWindow
from models_app.models import ApiKey

log = logging.getLogger(__name__)

RATE_WINDOWS_FILE = "rate-windows.sqlite3"  # in the data directory, without Redis

MISS_RELOAD_EVERY = 1.0  # seconds between reloads for keys the table does not know


def rate_window() -> RateWindow:
    """Where keys' requests per minute are counted, so every web process shares the
    count: in Redis when the cluster has one, else in a SQLite file in the data directory
    (the web processes of the embedded profile share one host), or in this process's
    memory when `llmux serve` runs it alone (a SQLite admission costs about 0.1 ms of the
    web process's CPU; keys on measured 0.82 of keys off with it on 2 cores)."""
    if settings.REDIS_URL:
        from llmux_site.gateway.redis_window import RedisWindow

        return RedisWindow(settings.REDIS_URL, namespace=settings.Q_CLUSTER["name"])
    if settings.LLMUX_WEB_PROCESS_COUNT == 1:
        return LocalWindow()
    return SqliteWindow(Path(settings.DATA_DIR) / RATE_WINDOWS_FILE)


def keys_fingerprint() -> tuple[Any, ...]:
    found = ApiKey.objects.aggregate(n=Count("id"), at=Max("updated_at"))
    return (found["n"], found["at"])


def key_records() -> dict[str, KeyRecord]:
    rows = ApiKey.objects.filter(revoked=False).values_list(
        "id", "prefix", "secret_hash", "scopes", "rpm_limit", "expires_at"
    )
    return {
        prefix: KeyRecord(
            key_id=pk,
            secret_hash=secret_hash,
            scopes=frozenset(str(s) for s in scopes or ()),
            rpm=rpm,
            expires_at=expires.timestamp() if expires else None,
        )
        for pk, prefix, secret_hash, scopes, rpm, expires in rows
    }


@dataclass
class GatewayKeys:
    """The web process's key table, and the usage it has not written yet."""

    table: KeyTable
    window: RateWindow = field(default_factory=LocalWindow)
    fingerprint: tuple[Any, ...] = ()
    _pending: dict[int, list[int]] = field(default_factory=dict)  # key -> [n, prompt, compl.]
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _missed_at: float = float("-inf")
    _miss_reload: asyncio.Future[None] | None = None

    @classmethod
    def create(
        cls, *, required: bool, required_remote: bool = False, window: RateWindow | None = None
    ) -> GatewayKeys:
        table = KeyTable(required=required, required_remote=required_remote)
        keys = cls(table, window or LocalWindow())
        try:
            keys.reload()
        except DatabaseError:  # not migrated yet: the refresher loads it once it can
            log.warning("gateway: API keys not readable yet; will retry")
        return keys

    async def identify(self, authorization: str | None, client: str | None) -> KeyRecord | None:
        if authorization and self.table.unknown_prefix(authorization):
            # Perhaps a key made a moment ago, before this process heard of it.
            await self._reload_for_miss()
        return self.table.identify(authorization, client)

    async def _reload_for_miss(self) -> None:
        """Read the keys again, at most once a second: requests that miss meanwhile wait
        for that one read, so a new key works on its first use and a stream of bad keys
        costs the database one query a second (and each bad request up to a second)."""
        if self._miss_reload is None:
            self._miss_reload = asyncio.ensure_future(self._throttled_reload())
        await asyncio.shield(self._miss_reload)

    async def _throttled_reload(self) -> None:
        try:
            wait = self._missed_at + MISS_RELOAD_EVERY - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._missed_at = time.monotonic()
            await asyncio.to_thread(self._reload_quietly)
        finally:
            self._miss_reload = None

    async def admit(self, record: KeyRecord) -> Grant:
        if record.rpm is not None:
            wait = await self.window.admit(record.key_id, record.rpm)
            if wait is not None:
                raise rate_limited(record.rpm, wait)
        return Grant(record.key_id, record.rpm)

    def _reload_quietly(self) -> None:
        try:
            self.reload()
        except DatabaseError:
            log.exception("gateway: could not reload the API keys")
        finally:
            connections.close_all()  # this worker thread keeps no connection open

    def reload(self) -> None:
        """Reload the records when the keys changed (sync: a database read)."""
        fingerprint = keys_fingerprint()
        if fingerprint != self.fingerprint:
            self.table.records = key_records()
            self.fingerprint = fingerprint

    def record(self, grant: Grant, model: str, usage: dict[str, int]) -> None:
        with self._lock:
            counts = self._pending.setdefault(grant.key_id, [0, 0, 0])
            counts[0] += 1
            counts[1] += usage.get("prompt_tokens", 0)
            counts[2] += usage.get("completion_tokens", 0)

    def pending(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def flush(self) -> None:
        """Write the usage gathered since the last flush (one UPDATE per key)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        now = timezone.now()
        with transaction.atomic():
            for key_id, (n, prompt, completion) in pending.items():
                ApiKey.objects.filter(pk=key_id).update(
                    requests=F("requests") + n,
                    prompt_tokens=F("prompt_tokens") + prompt,
                    completion_tokens=F("completion_tokens") + completion,
                    last_used_at=now,
                )
