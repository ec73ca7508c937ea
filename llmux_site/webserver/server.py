"""Daphne with request limits enforced while a request arrives, not after.

Twisted reads a whole request body (into memory or a temporary file) before daphne hands
it to the ASGI application, so a limit checked by the application comes after the damage:
a 256 MiB body is read in full before its 413, and a Content-Length that is never met
holds the connection for good. ``LimitedChannel`` checks the announced length when the
headers end, counts a chunked body as it is decoded, and gives a request's headers and
body each a deadline; what it refuses it answers itself, in OpenAI's error shape, and
closes. Only the limits are added: parsing and everything after it stay daphne's.
"""

from __future__ import annotations

# daphne.server installs Twisted's asyncio reactor when imported: it must come first.
import daphne.server  # isort: skip

import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

from llmux_site.gateway.errors import error_body
from llmux_site.webserver.limits import ServerLimits
from llmux_site.webserver.listening import adopting_endpoint, ready_signal

# After a refusal the client may still be sending: closing a socket with unread data makes
# the kernel answer with a reset, which can destroy the answer before the client reads it.
# So the server stops writing, reads (and drops) what still comes for this long, then closes.
LINGER_SECS: Final = 2.0
# How often pending deadlines are checked: a deadline is met up to this much late.
SWEEP_SECS: Final = 0.25


def refusal(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 answer, OpenAI's error as its body, that ends the connection."""
    body = error_body(status, message)
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
        status,
        HTTPStatus(status).phrase.encode(),
        len(body),
    )
    return head + b"connection: close\r\n\r\n" + body


def too_large(limit: int) -> str:
    return f"The request body is larger than {limit} bytes."


class Deadlines:
    """The pending deadline of every connection, checked by one timer a few times a second.

    A Twisted timer per request costs about 7.5 µs to set and cancel, twice per request
    with a body; a dictionary entry costs 0.2 µs, and the sweep's work grows only with
    the requests that are still arriving when it runs.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._due: dict[LimitedChannel, float] = {}

    def set(self, channel: LimitedChannel, seconds: float) -> None:
        self._due[channel] = self.clock() + seconds

    def clear(self, channel: LimitedChannel) -> None:
        self._due.pop(channel, None)

    def sweep(self) -> None:
        now = self.clock()
        passed = [channel for channel, due in self._due.items() if due <= now]
        for channel in passed:
            del self._due[channel]
            channel.deadline_passed()


class LimitedChannel(HTTPChannel):
    """Twisted's HTTP/1.1 connection with a body limit and header and body deadlines."""

    def __init__(self, limits: ServerLimits, deadlines: Deadlines) -> None:
        super().__init__()
        self.limits = limits
        self.MAX_LENGTH = limits.max_header_bytes  # one line (the request line included)
        self.totalHeadersSize = limits.max_header_bytes
        self.refused = False
        self._deadlines = deadlines
        self._awaiting: str | None = None  # "headers" or "body" while a deadline runs
        self._linger: Any = None  # the DelayedCall that ends a refused connection

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return  # lingering after a refusal: what the client still sends is dropped
        if self._awaiting is None and self.line_mode and not self._handlingRequest:
            # The first byte of a request: its headers must be complete in time.
            self._start_deadline("headers")
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self.refused:
            return
        if self._receivedHeaderSize + len(line) > self.limits.max_header_bytes:
            self.lineLengthExceeded(line)
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        limit = self.limits.max_header_bytes
        self.refuse(431, f"The request line and headers are larger than {limit} bytes.")

    def allHeadersReceived(self) -> None:
        self._cancel_deadline()
        limit = self.limits.max_body_bytes
        if self.length is not None and self.length > limit:
            # Before Twisted answers `Expect: 100-continue`, so such a body is never sent.
            self.refuse(413, too_large(limit))
            return
        super().allHeadersReceived()
        if self.length != 0:  # a body follows: by Content-Length, or chunked (None)
            self._start_deadline("body")

    def rawDataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if self.refused:
            return  # the chunked decoder may still finish a body refused in the same read
        self._cancel_deadline()
        super().allContentReceived()

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's bare 400 without a body, in the shape every other refusal has.
        self.refuse(400, "The request is not valid HTTP/1.1.")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)

    def refuse(self, status: int, message: str) -> None:
        """Answer ``status`` before the application ever sees the request, then close."""
        if self.refused or self.transport is None:
            return
        self.refused = True
        self._cancel_deadline()
        transport: Any = self.transport  # zope interfaces confuse mypy without its plugin
        transport.write(refusal(status, message))
        lose_write = getattr(transport, "loseWriteConnection", None)
        if lose_write is None:
            transport.loseConnection()
            return
        lose_write()
        self._linger = self.callLater(LINGER_SECS, self._end_linger)

    def deadline_passed(self) -> None:
        """The headers or body under way did not arrive in time (``Deadlines`` calls this)."""
        part, self._awaiting = self._awaiting, None
        seconds = self.limits.header_timeout if part == "headers" else self.limits.body_timeout
        self.refuse(408, f"The request {part} did not arrive within {seconds:g} s.")

    def _end_linger(self) -> None:
        self._linger = None
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def _start_deadline(self, part: str) -> None:
        self._awaiting = part
        limits = self.limits
        self._deadlines.set(
            self, limits.header_timeout if part == "headers" else limits.body_timeout
        )

    def _cancel_deadline(self) -> None:
        if self._awaiting is not None:
            self._awaiting = None
            self._deadlines.clear(self)


class LimitedRequest(WebRequest):  # type: ignore[misc]  # daphne ships no type hints
    """Daphne's request, its body counted against the limit as it is decoded."""

    body_bytes = 0

    def handleContentChunk(self, data: bytes) -> None:
        channel: LimitedChannel = self.channel
        if channel.refused:
            return
        self.body_bytes += len(data)
        limit = channel.limits.max_body_bytes
        if self.body_bytes > limit:  # a chunked body: its length was not known up front
            channel.refuse(413, too_large(limit))
            return
        super().handleContentChunk(data)


def _limited_protocol(factory: LimitedHTTPFactory) -> _GenericHTTPChannelProtocol:
    # Twisted's factory makes its protocol the same way, around a plain HTTPChannel.
    return _GenericHTTPChannelProtocol(LimitedChannel(factory.limits, factory.deadlines))


class LimitedHTTPFactory(HTTPFactory):  # type: ignore[misc]  # daphne ships no type hints
    """Daphne's HTTP factory, building ``LimitedChannel`` connections; sweeps deadlines."""

    protocol = _limited_protocol

    def __init__(self, server: LimitedServer) -> None:
        super().__init__(server)
        self.limits = server.limits
        self.deadlines = Deadlines()
        self._sweeper = LoopingCall(self.deadlines.sweep)

    def startFactory(self) -> None:
        super().startFactory()
        if not self._sweeper.running:
            self._sweeper.start(SWEEP_SECS, now=False)

    def stopFactory(self) -> None:
        if self._sweeper.running:
            self._sweeper.stop()
        super().stopFactory()

    def buildProtocol(self, addr: Any) -> _GenericHTTPChannelProtocol:
        protocol: _GenericHTTPChannelProtocol = super().buildProtocol(addr)
        protocol.requestFactory = LimitedRequest
        return protocol


class LimitedServer(daphne.server.Server):  # type: ignore[misc]  # no type hints
    """Daphne's server with ``LimitedHTTPFactory``; limits from the environment by default.

    Started by `llmux serve`, it adopts the socket it was given and tells its parent when
    it listens (llmux_site/webserver/listening.py).
    """

    def __init__(self, *args: Any, limits: ServerLimits | None = None, **kwargs: Any) -> None:
        if kwargs.get("ready_callable") is None:
            kwargs["ready_callable"] = ready_signal()
        super().__init__(*args, **kwargs)
        self.limits = limits or ServerLimits.from_environment()

    def run(self) -> None:
        # Server.run builds its factory and its endpoints from daphne.server's module-level
        # names and listens at once; naming ours there is the one way in, short of copying
        # run() whole.
        daphne.server.HTTPFactory = LimitedHTTPFactory
        daphne.server.serverFromString = adopting_endpoint
        super().run()


class LimitedCommandLine(CommandLineInterface):  # type: ignore[misc]  # no type hints
    """Daphne's command line (every option of `daphne`), serving with ``LimitedServer``."""

    description = "llmux's web server: daphne with request limits"
    server_class = LimitedServer


def main(argv: list[str] | None = None) -> None:
    import sys

    LimitedCommandLine().run(sys.argv[1:] if argv is None else argv)
