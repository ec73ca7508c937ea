"""Carry the notification bus's hints between hosts over one Redis pub/sub channel.

The bus (`notify.LocalBus`) reaches the listeners of one host through its socket
directory. With web processes and workers on several hosts, the others would only see a
change at their next poll; the relay publishes every message to Redis as well, and each
process hands what other hosts published to its own listening sockets.

Each message travels as `origin NUL message`. The origin names the host and the bus
directory, so a process ignores what its own host published (the local bus delivered it
already) and nothing arrives twice. Like the bus, the relay is best-effort: while Redis is
away messages are dropped (a warning is logged at most once a minute), and the waiters'
polls of the database carry on as the fallback.

Two daemon threads per process, started at first use and again in a forked child (django-q
forks its workers): one publishes from a queue, so a publisher never waits on Redis; one
subscribes and forwards.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import queue
import socket
import threading
import time
from pathlib import Path

import redis
from redis.exceptions import RedisError

from llmux_site.logs import Throttle

log = logging.getLogger("llmux.notify")

SEPARATOR = b"\0"
BACKLOG = 10_000  # messages queued for Redis at most; beyond it new ones are dropped
RETRY_EVERY = 1.0  # seconds between attempts to reach Redis again
WARN_EVERY = 60.0  # seconds between warnings that Redis is away
TIMEOUT = 2.0  # seconds a Redis command may take before the connection counts as lost
FLUSH_AT_EXIT = 1.0  # seconds an exiting process waits for its queued messages to go out


def origin_of(directory: Path) -> bytes:
    """This host's name for the bus in `directory` (processes sharing it share the name)."""
    where = f"{socket.gethostname()}:{directory.resolve()}"
    return hashlib.sha256(where.encode()).hexdigest()[:16].encode()


class RedisRelay:
    """Publishes the bus's messages to `channel` and delivers other hosts' to our sockets."""

    def __init__(self, url: str, channel: str, origin: bytes) -> None:
        self.url = url
        self.channel = channel
        self.origin = origin
        self._warnings = Throttle(WARN_EVERY)
        self._reset()
        # A forked child (django-q forks its workers) inherits this object but neither its
        # threads nor its listeners, and maybe a lock some thread held: start afresh.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._paths: set[str] = set()
        self._lock = threading.Lock()
        self._started = False
        self._outbox: queue.Queue[bytes] = queue.Queue(BACKLOG)
        self._subscribed = threading.Event()

    # --- the bus's side -------------------------------------------------------------------

    def send(self, message: bytes) -> None:
        """Queue `message` for the other hosts; never blocks (a full queue drops it)."""
        self._start()
        with contextlib.suppress(queue.Full):
            self._outbox.put_nowait(self.origin + SEPARATOR + message)

    def attach(self, path: Path) -> None:
        """Deliver other hosts' messages to the listening socket at `path` too."""
        with self._lock:
            self._paths.add(str(path))
        self._start()

    def detach(self, path: Path) -> None:
        with self._lock:
            self._paths.discard(str(path))

    def wait_subscribed(self, timeout: float) -> bool:
        """Whether the subscription is live (messages published from now on arrive)."""
        self._start()
        return self._subscribed.wait(timeout)

    # --- the threads ----------------------------------------------------------------------

    def _start(self) -> None:
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            self._started = True
            for target, name in ((self._publish_loop, "publish"), (self._forward_loop, "forward")):
                threading.Thread(target=target, name=f"notify-relay-{name}", daemon=True).start()
            atexit.register(self.flush, FLUSH_AT_EXIT)

    def flush(self, timeout: float) -> bool:
        """Wait until the messages queued so far went out (or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._outbox.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
        )

    def _publish_loop(self) -> None:
        client = self._client()
        while True:
            data = self._outbox.get()
            try:
                client.publish(self.channel, data)
            except (RedisError, OSError) as exc:
                self._warn("publish", exc)
            finally:
                self._outbox.task_done()

    def _forward_loop(self) -> None:
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.setblocking(False)
        while True:
            try:
                self._subscribe_and_forward(sender)
            except (RedisError, OSError) as exc:
                self._warn("subscription", exc)
            self._subscribed.clear()
            time.sleep(RETRY_EVERY)

    def _subscribe_and_forward(self, sender: socket.socket) -> None:
        pubsub = self._client().pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self.channel)
            while True:
                # The timeout only bounds one read: an idle channel is no error.
                event = pubsub.get_message(timeout=1.0)
                if event is None:
                    continue
                if event["type"] == "subscribe":
                    self._subscribed.set()
                elif event["type"] == "message":
                    self._forward(sender, event["data"])
        finally:
            pubsub.close()

    def _forward(self, sender: socket.socket, data: bytes) -> None:
        origin, _, message = data.partition(SEPARATOR)
        if origin == self.origin or not message:
            return  # our own host's message: the local bus delivered it
        with self._lock:
            paths = list(self._paths)
        for path in paths:
            with contextlib.suppress(OSError):  # a listener closing or behind
                sender.sendto(message, path)

    def _warn(self, what: str, exc: BaseException) -> None:
        if self._warnings.ready():
            log.warning(
                "notify: Redis %s failed (%s); other hosts see changes at their next poll",
                what,
                exc,
            )
