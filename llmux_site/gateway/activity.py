"""Per-request activity: the requests in flight and those finished since the last flush. Pure.

The hot path only touches memory: `begin` adds a `LiveRequest` to a dict, `end` appends one
`FinishedRequest` tuple to a list. Whoever owns the `Activity` (the Django side's
`ActivityReport`) takes the finished ones in batches (`take_finished`) and writes them off
the request path, and reads `live_rows` to report what is in flight. An operator's cancel
(`cancel`) cancels the request's own task; the gateway then ends the client's answer.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, NamedTuple

from llmux_site.gateway.errors import error_body, sse_error_event

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

# The finished requests a process keeps while its writer is behind (a database outage):
# beyond this the oldest are dropped, counted in `dropped`, so memory stays bounded.
MAX_PENDING = 100_000
CAPTURE_LIMIT = 64 * 1024  # bytes of a prompt or an answer kept when capture is on
# The status of a request an operator cancelled before its answer began: not retried by
# OpenAI's SDKs (they retry 408, 409, 429 and 5xx), nginx's "closed before the answer".
CANCELLED_STATUS: Final = 499
CANCELLED_MESSAGE: Final = "This request was cancelled by an llmux operator."


class ResponseTap:
    """Notes an answer's status and when its first byte went out."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = time.monotonic()
        self.status = 0
        self.sse = False
        self.first_byte: float | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.sse = any(
                name == b"content-type" and value.startswith(b"text/event-stream")
                for name, value in message.get("headers", ())
            )
        elif self.first_byte is None and message["type"] == "http.response.body":
            self.first_byte = time.monotonic()
        await self._send(message)

    def first_byte_after(self) -> float | None:
        return None if self.first_byte is None else self.first_byte - self.started


class FinishedRequest(NamedTuple):
    """One ended request, as the writer stores it (times in seconds; None: not known)."""

    request_id: str
    started_at: float  # Unix seconds
    path: str
    model: str
    key_id: int | None
    client: str
    stream: bool
    status: int
    cancelled: bool
    wait_s: float | None
    ttft_s: float | None
    duration_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    prompt_text: str | None  # only while capture is on
    completion_text: str | None


class LiveRequest:
    """One request between its admission and its end, in this process."""

    __slots__ = (
        "answer",
        "cancelled",
        "client",
        "id",
        "key_id",
        "model",
        "path",
        "prompt",
        "started",
        "started_at",
        "stream",
        "task",
        "usage",
        "waited",
    )

    def __init__(
        self,
        request_id: str,
        path: str,
        model: str,
        key_id: int | None,
        client: str,
        stream: bool,
    ) -> None:
        self.id = request_id
        self.path = path
        self.model = model
        self.key_id = key_id
        self.client = client
        self.stream = stream
        self.started = time.monotonic()
        self.started_at = time.time()
        self.task = asyncio.current_task()
        self.waited: float | None = None  # seconds waiting for a slot (a switch)
        self.cancelled = False  # by an operator
        self.prompt: bytes | None = None  # captured request body
        self.answer: bytearray | None = None  # captured answer
        self.usage: dict[str, int] | None = None  # the engine's token counts

    def note_wait(self, seconds: float) -> None:
        self.waited = (self.waited or 0.0) + seconds

    def capture(self, send: Send) -> Send:
        """`send`, keeping the first CAPTURE_LIMIT bytes of the answer's body."""
        answer = self.answer = bytearray()

        async def captured(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body" and len(answer) < CAPTURE_LIMIT:
                answer.extend(message.get("body", b"")[: CAPTURE_LIMIT - len(answer)])
            await send(message)

        return captured

    def row(self, now: float) -> dict[str, Any]:
        """What a report of the requests in flight says of this one (JSON-able)."""
        return {
            "id": self.id,
            "started_at": self.started_at,
            "elapsed_s": round(now - self.started, 3),
            "path": self.path,
            "model": self.model,
            "key_id": self.key_id,
            "client": self.client,
            "stream": self.stream,
            "waiting": self.waited is None,  # still waiting for its model's slot
            "wait_s": self.waited,
        }


def _text(data: bytes | bytearray | None) -> str | None:
    return None if data is None else bytes(data).decode("utf-8", "replace")


class Activity:
    """The requests in flight in this process, and the finished ones not written yet."""

    def __init__(self, *, capture: bool = False, max_pending: int = MAX_PENDING) -> None:
        self.live: dict[str, LiveRequest] = {}
        self.capture = capture  # keep prompts and answers (an admin's choice)
        self.max_pending = max_pending
        self.dropped = 0  # finished requests lost because the writer was behind
        self.on_first_use: Callable[[], None] | None = None  # starts the writer
        self._finished: list[FinishedRequest] = []
        self._prefix = f"{os.getpid():x}{os.urandom(2).hex()}"
        self._numbers = itertools.count(1)
        self._changed = False  # the set in flight changed since the last report

    def begin(
        self,
        path: str,
        model: str,
        key_id: int | None,
        client: str,
        payload: dict[str, Any],
        body: bytes,
    ) -> LiveRequest:
        if self.on_first_use is not None:
            start, self.on_first_use = self.on_first_use, None
            start()
        live = LiveRequest(
            f"{self._prefix}-{next(self._numbers)}",
            path,
            model,
            key_id,
            client,
            payload.get("stream") is True,
        )
        if self.capture:
            live.prompt = body[:CAPTURE_LIMIT]
        self.live[live.id] = live
        self._changed = True
        return live

    def end(
        self,
        live: LiveRequest,
        status: int,
        ttft_s: float | None,
        usage: dict[str, int] | None,
    ) -> None:
        self.live.pop(live.id, None)
        self._changed = True
        if len(self._finished) >= self.max_pending:
            del self._finished[0]
            self.dropped += 1
        self._finished.append(
            FinishedRequest(
                live.id,
                live.started_at,
                live.path,
                live.model,
                live.key_id,
                live.client,
                live.stream,
                status,
                live.cancelled,
                live.waited,
                ttft_s,
                time.monotonic() - live.started,
                usage.get("prompt_tokens") if usage else None,
                usage.get("completion_tokens") if usage else None,
                _text(live.prompt),
                _text(live.answer),
            )
        )

    def take_finished(self) -> list[FinishedRequest]:
        """The finished requests since the last call (the caller writes them)."""
        finished, self._finished = self._finished, []
        return finished

    def put_back(self, finished: list[FinishedRequest]) -> None:
        """Requests whose write failed: kept for the next try, oldest first, bounded."""
        merged = finished + self._finished
        overflow = len(merged) - self.max_pending
        if overflow > 0:
            self.dropped += overflow
            merged = merged[overflow:]
        self._finished = merged

    def live_changed(self) -> bool:
        """Whether the requests in flight changed since the last call."""
        changed, self._changed = self._changed, False
        return changed

    def live_rows(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [live.row(now) for live in self.live.values()]

    def cancel(self, request_id: str) -> bool:
        """Cancel a request in flight here (an operator's); False when it is not here."""
        live = self.live.get(request_id)
        if live is None or live.task is None or live.task.done():
            return False
        live.cancelled = True
        live.task.cancel()
        return True


async def end_cancelled(send: Send, status: int, sse: bool) -> None:
    """End the answer of a request an operator cancelled (`status`: the answer's, 0 when
    none began): an OpenAI-shaped error, else a last error event of a stream, else a
    short body (a plain body cannot carry an error once begun)."""
    if status == 0:
        body = error_body(CANCELLED_STATUS, CANCELLED_MESSAGE)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": CANCELLED_STATUS, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif sse:
        event = sse_error_event(CANCELLED_STATUS, CANCELLED_MESSAGE)
        await send({"type": "http.response.body", "body": b"\n\n" + event})
    else:
        await send({"type": "http.response.body", "body": b""})
