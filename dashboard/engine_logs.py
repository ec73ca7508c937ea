"""Engine logs on the dashboard: the end of a log with the offset it ends at, the live
tail from that offset on, and the whole file to download.

The page renders the end of the log and the byte offset it read up to; the websocket then
follows from exactly that offset (and, after a reconnect, from the offset the page had
reached), so no line written between the page and its socket is lost or shown twice.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

POLL = 0.5  # seconds between looks at the file's size
CHUNK = 64 * 1024  # the most one message carries
END_BYTES = 64 * 1024  # how far back the page's first lines are looked for


def log_end(path: Path, lines: int) -> tuple[list[str], int]:
    """The last `lines` whole lines of the log and the offset they end at ([], 0 if none)."""
    try:
        with open(path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            start = max(0, size - END_BYTES)
            log.seek(start)
            data = log.read(size - start)
    except OSError:
        return [], 0
    if start > 0:
        data = data.partition(b"\n")[2]  # the first line read is only the end of a line
    return data.decode("utf-8", errors="replace").splitlines()[-lines:], size


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read(path: str, start: int, end: int) -> bytes:
    with open(path, "rb") as log:
        log.seek(start)
        return log.read(end - start)


async def follow(path: str, offset: int) -> AsyncIterator[tuple[list[str], int]]:
    """Whole lines appended to the log after `offset`, with the offset after them.

    A log shorter than `offset` was truncated or replaced: it is followed from its start.
    A line still being written is sent once it ends.
    """
    position = offset
    while True:
        size = await asyncio.to_thread(_size, path)
        if size < position:
            position = 0
        if size > position:
            chunk = await asyncio.to_thread(_read, path, position, min(size, position + CHUNK))
            whole = chunk.rfind(b"\n") + 1
            if whole == 0 and len(chunk) == CHUNK:
                whole = len(chunk)  # one line longer than a chunk: sent in pieces
            if whole:
                position += whole
                text = chunk[:whole].decode("utf-8", errors="replace")
                yield text.splitlines(), position
                continue
        await asyncio.sleep(POLL)
