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
    from a relayed server-sent-event stream, whatever the chunk boundaries."""

    def __init__(self) -> None:
        self._tail = b""  # a line cut in two waits for its end
        self._dropped_data = False

    def feed(self, chunk: bytes, *, last: bool) -> bytes:
        data = self._tail + chunk
        if last:
            body, self._tail = data, b""
        else:
            cut = data.rfind(b"\n") + 1
            body, self._tail = data[:cut], data[cut:]
        return b"".join(line for line in body.splitlines(keepends=True) if self._keep(line))

    def _keep(self, line: bytes) -> bool:
        text = line.rstrip(b"\r\n")
        if self._dropped_data:
            self._dropped_data = False
            if not text:
                return False  # the end of the dropped event
        if text.startswith(b"data: {") and b'"usage"' in text and _usage_only(text[6:]):
            self._dropped_data = True
            return False
        return True
