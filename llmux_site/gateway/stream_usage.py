"""Usage of a streamed request that the client did not ask to see. Pure.

A key's usage is read from the engine's `usage` object. A streamed chat or completion
carries one only when the request sets `stream_options.include_usage`, so a client that
does not ask would use tokens that are never counted against its key. When the gateway
meters a key, it asks the engine for the usage on the client's behalf (`ask_for_usage`)
and drops the extra usage-only event from what it relays (`UsageEventFilter`), so the
client sees the stream it asked for.
"""

from __future__ import annotations

import json
from typing import Any

# The routes whose streams take `stream_options` (OpenAI's and vLLM's). /v1/responses
# streams its usage in `response.completed` whatever the request says.
STREAM_OPTION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


def ask_for_usage(path: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """The payload asking the engine for the stream's usage, or None when there is nothing
    to add: not a stream, not a route with stream options, or the client already asked."""
    if path not in STREAM_OPTION_PATHS or payload.get("stream") is not True:
        return None
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    return {**payload, "stream_options": {**(options or {}), "include_usage": True}}


def _usage_only(data: bytes) -> bool:
    """Whether an event's data is the usage chunk: no choices, a usage object."""
    try:
        chunk = json.loads(data)
    except ValueError:
        return False
    return (
        isinstance(chunk, dict)
        and chunk.get("choices") == []
        and isinstance(chunk.get("usage"), dict)
    )


class UsageEventFilter:
    """Removes the usage-only event (its `data:` line and the blank line that ends it)
    from a relayed server-sent-event stream, whatever the chunk boundaries.

    vLLM puts `system_fingerprint` on the stream's very last chunk: the usage chunk when
    usage was asked for, else the chunk that finishes the answer. So the finishing chunk
    is held until the next event shows whether a usage chunk follows; the usage chunk's
    fingerprint then goes onto it, and the client sees the stream it would have had
    without our asking. Only that one chunk waits; every token before it streams as is.
    """

    def __init__(self) -> None:
        self._tail = b""  # a line cut in two waits for its end
        self._dropped_data = False
        self._held: list[bytes] = []  # the finishing chunk's lines, until the next event

    def feed(self, chunk: bytes, *, last: bool) -> bytes:
        data = self._tail + chunk
        if last:
            body, self._tail = data, b""
        else:
            cut = data.rfind(b"\n") + 1
            body, self._tail = data[:cut], data[cut:]
        out = [kept for line in body.splitlines(keepends=True) for kept in self._lines(line)]
        if last:
            out += self._release()
        return b"".join(out)

    def _release(self, fingerprint: object = None) -> list[bytes]:
        held, self._held = self._held, []
        if held and fingerprint is not None:
            held[0] = _with_fingerprint(held[0], fingerprint)
        return held

    def _lines(self, line: bytes) -> list[bytes]:
        text = line.rstrip(b"\r\n")
        if self._dropped_data:
            self._dropped_data = False
            if not text:
                return []  # the end of the dropped event
        if self._held and len(self._held) == 1 and not text:
            self._held.append(line)  # the blank line that ends the held event
            return []
        if text.startswith(b"data: {") and b'"usage"' in text and _usage_only(text[6:]):
            self._dropped_data = True
            return self._release(_fingerprint(text[6:]))
        released = self._release() if self._held and text else []
        if text.startswith(b"data: {") and _finishes(text[6:]):
            self._held = [line]
            return released
        return [*released, line]


def _finishes(data: bytes) -> bool:
    """Whether a chunk finishes a choice without a fingerprint of its own."""
    if b'"finish_reason":' not in data or b"system_fingerprint" in data:
        return False
    try:
        chunk = json.loads(data)
    except ValueError:
        return False
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") is not None for c in choices
    )


def _fingerprint(data: bytes) -> object:
    try:
        chunk = json.loads(data)
    except ValueError:
        return None
    return chunk.get("system_fingerprint") if isinstance(chunk, dict) else None


def _with_fingerprint(line: bytes, fingerprint: object) -> bytes:
    """The `data:` line with `system_fingerprint` added as its object's last key."""
    body = line.rstrip(b"\r\n")
    ending = line[len(body) :]
    if not body.endswith(b"}"):
        return line
    added = b',"system_fingerprint":' + json.dumps(fingerprint).encode()
    return body[:-1] + added + b"}" + ending
