"""A host-local notification bus: one Unix datagram socket per listening process.

Web processes wait for engine state changes and workers wait for drain acknowledgements.
Both are in the database (the truth); this bus only says "look now", so a waiter reacts in
microseconds instead of at its next poll. Messages are best-effort hints: a lost one costs
one poll interval, never correctness, which is why polling stays as the fallback.
A `Relay` (notify_relay.RedisRelay) carries the same messages to and from other hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

SUFFIX = ".sock"
MAX_MESSAGE = 65536  # a datagram larger than this is cut (and its payload ignored)
# Errors that mean "nobody listens there any more": the socket file is stale.
STALE = {errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK}


class Relay(Protocol):
    """Carries messages between hosts: the bus sends each one and attaches its sockets."""

    def send(self, message: bytes) -> None: ...

    def attach(self, path: Path) -> None: ...

    def detach(self, path: Path) -> None: ...


class LocalBus:
    """Publish a short message to every listener in `directory`; listen for them."""

    def __init__(self, directory: str | os.PathLike[str], relay: Relay | None = None) -> None:
        self.directory = Path(directory)
        self.relay = relay
        self._sender: socket.socket | None = None

    def publish(self, message: bytes) -> int:
        """Send `message` to every listener (and to the relay); returns how many listeners
        of this host got it. Never blocks."""
        if self.relay is not None:
            self.relay.send(message)
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        delivered = 0
        with contextlib.suppress(FileNotFoundError):
            for path in self.directory.iterdir():
                if path.suffix != SUFFIX:
                    continue
                try:
                    self._sender.sendto(message, str(path))
                    delivered += 1
                except BlockingIOError:
                    pass  # the listener is behind: it will look at the database anyway
                except OSError as exc:
                    if exc.errno in STALE:
                        with contextlib.suppress(OSError):
                            path.unlink()
        return delivered

    def listen_sync(self) -> SyncListener:
        """A listener for synchronous code (a worker task waiting for new work)."""
        return SyncListener(self.directory, self.relay)

    async def listen(self, on_message: Callable[[bytes], None]) -> Listener:
        """Bind a fresh socket in the directory; `on_message` runs on the event loop."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()

        def readable() -> None:
            while True:
                try:
                    data = sock.recv(MAX_MESSAGE)
                except (BlockingIOError, InterruptedError):
                    return
                on_message(data)

        loop.add_reader(sock.fileno(), readable)
        if self.relay is not None:
            self.relay.attach(path)
        return Listener(sock, path, loop, self.relay)


class SyncListener:
    """A listening socket for synchronous code: `wait(timeout)` for the next message."""

    def __init__(self, directory: Path, relay: Relay | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.relay = relay
        if relay is not None:
            relay.attach(self.path)

    def wait(
        self, timeout: float, *, only: bytes | tuple[bytes, ...] | None = None
    ) -> bytes | None:
        """The next message (of a kind in `only`), or None when `timeout` passes first."""
        kinds = (only,) if isinstance(only, bytes) else only
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                message = self.sock.recv(MAX_MESSAGE)
            except TimeoutError:
                return None
            if kinds is None or message.partition(b" ")[0] in kinds:
                return message
            if time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        if self.relay is not None:
            self.relay.detach(self.path)
        self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


class Listener:
    """A bound listening socket; close it to stop (the socket file is removed)."""

    def __init__(
        self,
        sock: socket.socket,
        path: Path,
        loop: asyncio.AbstractEventLoop,
        relay: Relay | None = None,
    ) -> None:
        self.sock = sock
        self.path = path
        self.loop = loop
        self.relay = relay

    def close(self) -> None:
        if self.relay is not None:
            self.relay.detach(self.path)
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
