"""Tell waiting processes on this host to look at the database now (after commit)."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.db import transaction

from llmux_site.core.notify import LocalBus

RUNTIME = b"runtime"  # an engine state or drain token changed
PRESENCE = b"presence"  # a web process reported demand or a drain acknowledgement
QUEUED = b"queued"  # a switch or eviction was queued


@cache
def bus() -> LocalBus:
    return LocalBus(settings.LLMUX_DIRS["run"] / "notify")


def after_commit(message: bytes) -> None:
    """Publish once the surrounding transaction commits (at once outside one)."""
    transaction.on_commit(lambda: bus().publish(message))
