"""The one thread a web process's gateway reads and writes the database from."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async

P = ParamSpec("P")
T = TypeVar("T")


class DbThread:
    """Runs ORM calls off the event loop, one at a time, on a thread of its own.

    Not Django's shared sync thread: a request handled by Django must never wait behind
    the gateway's polls, nor the gateway behind a page.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, "llmux-gw-db")

    async def run(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        call = sync_to_async(func, thread_sensitive=False, executor=self._executor)
        return await call(*args, **kwargs)


async def stop_task(task: asyncio.Task[None] | None) -> None:
    """Cancel a web process's background task (refresher, reporter) and wait for its end."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
