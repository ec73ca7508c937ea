"""Gateway API keys: who may call which model, how often, and what they used. Pure.

A key is `llmux-<prefix>-<secret>`; only its SHA-256 is stored, found by its prefix. The
`KeyCheck` answers on the hot path from memory (the backend refreshes it): first who the
caller is (before any model is looked up, so names cannot be probed without a key), then,
once the model is known, whether the key's scopes allow it (`may_use`). A key's
requests-per-minute limit is counted by a `RateWindow` (`LocalWindow` in one process,
`SqliteWindow` across one host's processes, `RedisWindow` across hosts); the usage a
request consumed is read from the engine's own `usage` object in its answer (the last JSON
body, or the stream's usage chunk) and handed to a `UsageSink`, which batches writes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from llmux_site.core.addresses import is_loopback_host
from llmux_site.gateway.errors import GatewayError
from llmux_site.gateway.stream_usage import UsageEventFilter

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
    "may_use",
    "out_of_scope",
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
    async def identify(self, authorization: str | None, client: str | None) -> KeyRecord | None:
        """The caller's key, or None when it needs none (``client``: its address, None
        over a Unix socket); raises GatewayError 401 (no, bad or expired key)."""

    async def admit(self, record: KeyRecord) -> Grant:
        """Count one request of the key; raises GatewayError 429 when over its rate."""


def may_use(record: KeyRecord | None, name: str, resolve: Callable[[str], str | None]) -> bool:
    """Whether the key may use the model ``name`` names (anonymous callers may use any).

    A scope names a model or one of its aliases and grants that model by any of its
    names; a name no scope resolves to is refused whether a model has it or not.
    """
    if record is None or not record.scopes or name in record.scopes:
        return True
    public = resolve(name)
    return public is not None and any(resolve(scope) == public for scope in record.scopes)


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

    required: bool  # of every caller
    records: Mapping[str, KeyRecord] = field(default_factory=dict)  # prefix -> record
    clock: Callable[[], float] = time.time
    # Of callers beyond loopback only: `auto` on a loopback address, where such callers
    # come through a trusted reverse proxy (their address is the forwarded one).
    required_remote: bool = False

    def identify(self, authorization: str | None, client: str | None = None) -> KeyRecord | None:
        """The caller's record, or None when it may be anonymous; raises GatewayError 401
        (no, bad or expired key) when a key is required of ``client`` (None: a local socket)."""
        token = _bearer(authorization)
        parts = split_key(token) if token is not None else None
        record = self.records.get(parts[0]) if parts else None
        if (
            parts is None
            or record is None
            or not hmac.compare_digest(record.secret_hash, hash_secret(parts[1]))
        ):
            if not self._required_of(client):
                return None  # OpenAI clients always send some key: not ours, not needed
            if token is None:
                raise _unauthorized(
                    "You didn't provide an API key: send `Authorization: Bearer llmux-...`."
                )
            raise _unauthorized("Incorrect API key provided.")
        if record.expires_at is not None and self.clock() >= record.expires_at:
            raise _unauthorized("This API key has expired.")
        return record

    def _required_of(self, client: str | None) -> bool:
        return self.required or (
            self.required_remote and client is not None and not _is_loopback(client)
        )

    def unknown_prefix(self, authorization: str | None) -> bool:
        """Whether it is an llmux key whose prefix the table lacks (it may be brand new);
        any other token can never be one of ours."""
        parts = split_key(_bearer(authorization) or "")
        return parts is not None and parts[0] not in self.records


@lru_cache(maxsize=1024)
def _is_loopback(client: str) -> bool:
    return is_loopback_host(client)


def out_of_scope(name: str) -> GatewayError:
    """403: the key's scopes do not allow the model ``name``."""
    return GatewayError(403, f"This API key may not use the model `{name}`.", param="model")


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
        # Set when the gateway asked for the stream's usage on the client's behalf.
        self.hidden_usage: UsageEventFilter | None = None

    def hide_usage_event(self) -> None:
        """Relay the stream without the usage event the client did not ask for."""
        self.hidden_usage = UsageEventFilter()

    def wrap(self, send: Send) -> Send:
        async def metered(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = int(message["status"])
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type" and b"text/event-stream" in value:
                        self.sse = True
            elif message["type"] == "http.response.body" and self.status == 200:
                body = message.get("body", b"")
                self._feed(body)
                if self.sse and self.hidden_usage is not None:
                    last = not message.get("more_body", False)
                    message = {**message, "body": self.hidden_usage.feed(body, last=last)}
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
            answer = json.loads(raw)
            # /v1/responses nests it in the response (its stream's response.completed).
            usage = answer.get("usage") or (answer.get("response") or {}).get("usage")
        except (ValueError, AttributeError):
            return
        if isinstance(usage, dict):
            # Chat and completions say prompt/completion, /v1/responses input/output.
            prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
            completion = usage.get("completion_tokens", usage.get("output_tokens"))
            self.usage = {
                "prompt_tokens": int(prompt or 0),
                "completion_tokens": int(completion or 0),
            }
