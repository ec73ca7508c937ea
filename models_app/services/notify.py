"""Tell waiting processes on this host to look at the database now (after commit).

A message is a kind word, optionally followed by a JSON payload that saves the receiver
a database read: `runtime {"a": ["running", null]}` carries the committed state (and the
drain token when it changed) of the engines a transaction wrote; `drained [instance,
model, token]` is a web process's drain acknowledgement, sent before its row is written.
A payload is a shortcut, never the only copy: everything it says is in the database.
With Redis, the messages reach the cluster's other hosts too (core/notify_relay.py).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from django.conf import settings
from django.db import transaction

from llmux_site.core.notify import LocalBus

RUNTIME = b"runtime"  # an engine state or drain token changed
PRESENCE = b"presence"  # a web process reported demand or a drain acknowledgement
QUEUED = b"queued"  # a switch or eviction was queued
DRAINED = b"drained"  # a web process has nothing in flight for a draining model
WANTED = b"wanted"  # a web process is about to queue a switch (read ahead for it)
REGISTRY = b"registry"  # a model, an alias or the registry settings changed
PROBING = b"probing"  # a starting engine answers /health; its readiness probe runs
SWAP = b"swap"  # a swap row opened, moved to another phase or finished (the dashboard)


@cache
def bus() -> LocalBus:
    """This host's bus; with Redis, relayed to and from the cluster's other hosts."""
    directory = settings.LLMUX_DIRS["run"] / "notify"
    if not settings.REDIS_URL:
        return LocalBus(directory)
    from llmux_site.core.notify_relay import RedisRelay, origin_of

    channel = f"{settings.Q_CLUSTER['name']}:notify"
    return LocalBus(directory, RedisRelay(settings.REDIS_URL, channel, origin_of(directory)))


def message(kind: bytes, payload: Any = None) -> bytes:
    if payload is None:
        return kind
    return kind + b" " + json.dumps(payload, separators=(",", ":")).encode()


def parse(data: bytes) -> tuple[bytes, Any]:
    """(kind, payload or None); a payload that does not parse is dropped, not trusted."""
    kind, _, rest = data.partition(b" ")
    if not rest:
        return kind, None
    try:
        return kind, json.loads(rest)
    except ValueError:
        return kind, None


def after_commit(kind: bytes, payload: Any = None) -> None:
    """Publish once the surrounding transaction commits (at once outside one)."""
    data = message(kind, payload)
    transaction.on_commit(lambda: bus().publish(data))


def registry_changed() -> None:
    """Web processes reload the registry after this commit (they also poll, slowly)."""
    after_commit(REGISTRY)


def publish(kind: bytes, payload: Any = None) -> None:
    bus().publish(message(kind, payload))
