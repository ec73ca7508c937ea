"""Gateway API keys: who may call which model, how often, and what they used. Pure.

A key is `llmux-<prefix>-<secret>`; only its SHA-256 is stored, found by its prefix. The
`KeyCheck` answers on the hot path from memory (the backend refreshes it); a key's
requests-per-minute limit is counted by a `RateWindow` (`LocalWindow` in one process,
`RedisWindow` across processes); the usage a request consumed is read from the engine's
own `usage` object in its answer (the last JSON body, or the stream's usage chunk) and
handed to a `UsageSink`, which batches writes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmux_site.gateway.errors import GatewayError

__all__ = [
    "Grant",
    "KeyCheck",
    "KeyRecord",
    "KeyTable",
    "LocalWindow",
    "RateWindow",
    "UsageMeter",
    "UsageSink",
    "hash_secret",
    "rate_limited",
    "split_key",
]

PREFIX = "llmux"
MAX_USAGE_BODY = 4 * 1024 * 1024  # a JSON answer larger than this is not parsed for usage
WINDOW = 60.0  # seconds of the requests-per-minute limit


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """(prefix, secret) of `llmux-<prefix>-<secret>`, or None when it is not one."""
    parts = key.split("-", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


@dataclass(frozen=True, slots=True)
class Grant:
    key_id: int
    rpm: int | None = None  # the key's requests-per-minute limit, admitted by a RateWindow


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the gateway keeps of one key (never the secret)."""

    key_id: int
    secret_hash: str
    scopes: frozenset[str]  # model names or aliases; empty = every model
    rpm: int | None
    expires_at: float | None  # wall-clock seconds


# Hears what a granted request used: (grant, public model, {"prompt_tokens", ...}).
UsageSink = Callable[[Grant, str, dict[str, int]], None]


class KeyCheck(Protocol):
    async def check(self, authorization: str | None, model: str, public: str) -> Grant | None:
        """The grant of this request, or None when keys are not required; raises
        GatewayError (401 no/bad/expired key, 403 out of scope, 429 over its rate)."""


class RateWindow(Protocol):
    async def admit(self, key_id: int, rpm: int) -> float | None:
        """Count one request of the key: None when it fits in the last WINDOW seconds'
        `rpm`, else (counting nothing) the seconds until the oldest one leaves it."""


@dataclass
class LocalWindow:
    """A sliding minute per key in this process's memory (one web process)."""

    clock: Callable[[], float] = time.monotonic
    window: float = WINDOW
    _recent: dict[int, deque[float]] = field(default_factory=dict)

    async def admit(self, key_id: int, rpm: int) -> float | None:
        now = self.clock()
        recent = self._recent.setdefault(key_id, deque())
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if len(recent) >= rpm:
            return recent[0] + self.window - now
        recent.append(now)
        return None


def rate_limited(rpm: int, wait: float) -> GatewayError:
    """The 429 of a key over its rate; Retry-After rounds up to whole seconds."""
    retry = max(1, int(wait) + 1)
    error = GatewayError(
        429, f"Rate limit reached: {rpm} requests per minute for this key. Retry after {retry} s."
    )
    error.headers = [(b"retry-after", str(retry).encode())]
    return error


@dataclass
class KeyTable:
    """The keys in memory: who a request is, and whether its key may use the model."""

    required: bool
    records: Mapping[str, KeyRecord] = field(default_factory=dict)  # prefix -> record
    clock: Callable[[], float] = time.time

    def known(self, authorization: str | None) -> bool:
        """Whether the key's prefix is in the table (an unknown one may be brand new)."""
        parts = split_key(_bearer(authorization) or "")
        return parts is not None and parts[0] in self.records

    def check(self, authorization: str | None, model: str, public: str) -> Grant | None:
        """The grant (its rate not yet counted), or None when anonymous is fine; raises
        GatewayError 401 (no, bad or expired key) or 403 (model out of the key's scope)."""
        token = _bearer(authorization)
        if token is None:
            if not self.required:
                return None
            raise _unauthorized(
                "You didn't provide an API key: send `Authorization: Bearer llmux-...`."
            )
        parts = split_key(token)
        record = self.records.get(parts[0]) if parts else None
        if (
            parts is None
            or record is None
            or not hmac.compare_digest(record.secret_hash, hash_secret(parts[1]))
        ):
            if not self.required:
                return None  # OpenAI clients always send some key: not ours, not needed
            raise _unauthorized("Incorrect API key provided.")
        if record.expires_at is not None and self.clock() >= record.expires_at:
            raise _unauthorized("This API key has expired.")
        if record.scopes and model not in record.scopes and public not in record.scopes:
            raise GatewayError(403, f"This API key may not use the model `{model}`.", param="model")
        return Grant(record.key_id, record.rpm)


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _unauthorized(message: str) -> GatewayError:
    error = GatewayError(401, message)
    error.headers = [(b"www-authenticate", b'Bearer realm="llmux"')]
    return error


Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class UsageMeter:
    """Reads the engine's `usage` from the answer it relays (`wrap` the ASGI send)."""

    def __init__(self) -> None:
        self.status = 0
        self.sse = False
        self._body = bytearray()
        self._tail = b""
        self.usage: dict[str, int] | None = None

    def wrap(self, send: Send) -> Send:
        async def metered(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = int(message["status"])
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type" and b"text/event-stream" in value:
                        self.sse = True
            elif message["type"] == "http.response.body" and self.status == 200:
                self._feed(message.get("body", b""))
            await send(message)

        return metered

    def _feed(self, chunk: bytes) -> None:
        if self.sse:
            data = self._tail + chunk
            lines = data.split(b"\n")
            self._tail = lines.pop()  # a line cut in two waits for its end
            for line in lines:
                if line.startswith(b"data: {") and b'"usage"' in line:
                    self._take(line[6:])
        elif len(self._body) + len(chunk) <= MAX_USAGE_BODY:
            self._body += chunk

    def finish(self) -> dict[str, int] | None:
        if not self.sse and self._body:
            self._take(bytes(self._body))
        return self.usage

    def _take(self, raw: bytes) -> None:
        try:
            usage = json.loads(raw).get("usage")
        except (ValueError, AttributeError):
            return
        if isinstance(usage, dict):
            self.usage = {
                "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                "completion_tokens": int(usage.get("completion_tokens") or 0),
            }
