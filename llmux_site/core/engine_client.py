"""Async client for one vLLM engine's HTTP surface (ENGINE_CONTRACT §1), over TCP or a unix socket.

Pure core: no Django. Idempotent reads (health, is_sleeping, models, version, metrics, load) are
retried a few times on connection errors, timeouts and 5xx answers; state changes (sleep, wake,
collective_rpc) and inference never are, because repeating them is not safe.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

from llmux_site.core.addresses import ListenAddress

SLEEP_MODES = frozenset({"abort", "wait", "keep"})
WAKE_TAGS = ("weights", "kv_cache")
# Margin on top of a collective_rpc's own timeout, so the engine reports it before we give up.
RPC_TIMEOUT_MARGIN_S = 5.0


class EngineError(Exception):
    """Any failure talking to an engine."""


class EngineUnreachable(EngineError):
    """No connection: the engine is not listening, or it dropped the connection."""


class EngineTimeout(EngineError):
    """The engine did not answer within the call's timeout."""


class EngineHTTPError(EngineError):
    """The engine answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class CallTimeouts:
    """Seconds each kind of call may take, end to end."""

    health: float = 5.0
    control: float = 30.0
    sleep: float = 300.0
    wake: float = 300.0
    rpc: float = 600.0
    inference: float = 600.0
    probe: float = 60.0


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """A one-token completion used as a readiness check."""

    text: str
    latency_s: float


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body.strip() else None

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; empty for the empty bodies older vLLM sends."""
        try:
            value = self.json()
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


def error_message(body: bytes, fallback: str) -> str:
    """The message of an OpenAI-shaped error body, else the body's text, else `fallback`."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode(errors="replace").strip()
        return text[:500] or fallback
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(data.get("detail"), str):
            return str(data["detail"])
    return body.decode(errors="replace")[:500] or fallback


def open_session(address: ListenAddress) -> aiohttp.ClientSession:
    """A session (connection pool) for one engine, over TCP or its Unix socket."""
    connector: aiohttp.BaseConnector
    if address.uds is not None:
        connector = aiohttp.UnixConnector(path=address.uds)
    else:
        connector = aiohttp.TCPConnector()
    return aiohttp.ClientSession(connector=connector)


class EngineClient:
    """One engine's HTTP API. Use as `async with EngineClient(addr) as client: …`."""

    def __init__(
        self,
        address: ListenAddress,
        *,
        timeouts: CallTimeouts | None = None,
        retries: int = 2,
        session: aiohttp.ClientSession | None = None,
        retry_backoff_s: float = 0.05,
    ) -> None:
        self.address = address
        self.timeouts = timeouts or CallTimeouts()
        self.retries = max(0, retries)
        self.retry_backoff_s = retry_backoff_s
        self._base = address.base_url()
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session this client created (a session passed in stays open)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = open_session(self.address)
            self._owns_session = True
        return self._session

    # -- transport ----------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        limit_s: float,
        params: Sequence[tuple[str, str]] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> _Reply:
        """One HTTP exchange; errors become EngineUnreachable, EngineTimeout, EngineHTTPError."""
        session = self._get_session()
        try:
            async with session.request(
                method,
                self._base + path,
                params=params,
                json=body,
                timeout=aiohttp.ClientTimeout(total=limit_s),
            ) as response:
                reply = _Reply(response.status, await response.read())
        except TimeoutError:
            raise EngineTimeout(
                f"{method} {path} on {self.address}: no answer in {limit_s}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise EngineUnreachable(f"{method} {path} on {self.address}: {exc}") from exc
        if reply.status >= 400:
            raise EngineHTTPError(reply.status, error_message(reply.body, f"HTTP {reply.status}"))
        return reply

    async def _send_idempotent(self, method: str, path: str, *, limit_s: float) -> _Reply:
        """`_send` with bounded retries on connection errors, timeouts and 5xx."""
        for attempt in range(self.retries + 1):
            try:
                return await self._send(method, path, limit_s=limit_s)
            except (EngineUnreachable, EngineTimeout, EngineHTTPError) as exc:
                retryable = not isinstance(exc, EngineHTTPError) or exc.status >= 500
                if not retryable or attempt == self.retries:
                    raise
            await asyncio.sleep(self.retry_backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    # -- health and reads ---------------------------------------------------------------

    async def health(self) -> bool:
        """True when /health answers 200 (it does while sleeping too); False on errors or
        when nothing listens. A hung engine raises EngineTimeout instead of answering False."""
        try:
            await self._send_idempotent("GET", "/health", limit_s=self.timeouts.health)
        except (EngineUnreachable, EngineHTTPError):
            return False
        return True

    async def is_sleeping(self) -> bool:
        reply = await self._send_idempotent("GET", "/is_sleeping", limit_s=self.timeouts.control)
        return bool(reply.json_object().get("is_sleeping"))

    async def models(self) -> list[dict[str, Any]]:
        reply = await self._send_idempotent("GET", "/v1/models", limit_s=self.timeouts.control)
        data = reply.json_object().get("data")
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []

    async def version(self) -> str:
        reply = await self._send_idempotent("GET", "/version", limit_s=self.timeouts.control)
        return str(reply.json_object().get("version", ""))

    async def metrics(self) -> str:
        reply = await self._send_idempotent("GET", "/metrics", limit_s=self.timeouts.control)
        return reply.body.decode(errors="replace")

    async def weights_verified(self) -> bool | None:
        """The simulator's own weights checksum check (`/sim/state`); None for an engine
        that has none (vLLM answers 404)."""
        try:
            reply = await self._send_idempotent("GET", "/sim/state", limit_s=self.timeouts.control)
        except EngineHTTPError as exc:
            if exc.status == 404:
                return None
            raise
        verdict = reply.json_object().get("weights_ok")
        return verdict if isinstance(verdict, bool) else None

    async def load(self) -> int:
        reply = await self._send_idempotent("GET", "/load", limit_s=self.timeouts.control)
        return int(reply.json_object().get("server_load", 0))

    # -- sleep, wake, collective_rpc ----------------------------------------------------

    async def sleep(self, level: int, mode: str = "abort") -> dict[str, Any]:
        """POST /sleep?level=L&mode=M. vLLM 0.32+'s body, or {} for the empty 200 of older
        releases: ask /is_sleeping rather than read it."""
        if level not in (0, 1, 2):
            raise ValueError(f"sleep level must be 0, 1 or 2, not {level!r}")
        if mode not in SLEEP_MODES:
            raise ValueError(f"sleep mode must be one of {sorted(SLEEP_MODES)}, not {mode!r}")
        params = [("level", str(level)), ("mode", mode)]
        reply = await self._send("POST", "/sleep", params=params, limit_s=self.timeouts.sleep)
        return reply.json_object()

    async def wake_up(self, tags: Sequence[str] | None = None) -> dict[str, Any]:
        """POST /wake_up (all) or /wake_up?tags=…; {} for the empty 200 of vLLM before 0.32,
        which honours the tags all the same: ask /is_sleeping whether the engine is awake."""
        params = [("tags", tag) for tag in tags or ()]
        reply = await self._send("POST", "/wake_up", params=params, limit_s=self.timeouts.wake)
        return reply.json_object()

    async def wake_after_discard(self) -> None:
        """Wake from level-2 sleep: weights buffer, reload weights from disk, KV cache, then
        drop the prefix cache. Without the reload the output is garbage.

        Each step follows /is_sleeping, never the shape of an answer: vLLM 0.15-0.31 answer
        `wake_up?tags=weights` with an empty 200 yet keep the KV cache asleep until it is
        woken by name (docs/ENGINES.md). An engine that ignores tags and wakes everything at
        once reports awake after the first call and skips the KV cache step."""
        await self.wake_up(["weights"])
        await self.collective_rpc("reload_weights")
        if await self.is_sleeping():
            await self.wake_up(["kv_cache"])
        # vLLM since 0.15 drops the prefix cache when it sleeps; older releases and forks
        # may not, and a stale prefix cache over a fresh KV cache serves garbage.
        await self.reset_prefix_cache()

    async def collective_rpc(
        self,
        method: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> list[Any]:
        """POST /collective_rpc; the list has one result per tensor-parallel rank."""
        body: dict[str, Any] = {"method": method, "args": list(args), "kwargs": dict(kwargs or {})}
        http_timeout = self.timeouts.rpc
        if timeout is not None:
            body["timeout"] = timeout
            http_timeout = max(http_timeout, timeout + RPC_TIMEOUT_MARGIN_S)
        reply = await self._send("POST", "/collective_rpc", body=body, limit_s=http_timeout)
        results = reply.json_object().get("results", [])
        return list(results) if isinstance(results, list) else [results]

    async def reset_prefix_cache(self) -> None:
        await self._send("POST", "/reset_prefix_cache", limit_s=self.timeouts.control)

    async def release_kv_cache_memory(self) -> None:
        await self._send("POST", "/release_kv_cache_memory", limit_s=self.timeouts.control)

    # -- inference ----------------------------------------------------------------------

    async def _infer(self, path: str, body: Mapping[str, Any], limit_s: float) -> dict[str, Any]:
        if body.get("stream"):
            raise ValueError("EngineClient answers whole JSON bodies; stream through a proxy")
        reply = await self._send("POST", path, body=body, limit_s=limit_s)
        return reply.json_object()

    async def chat(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._infer("/v1/chat/completions", body, self.timeouts.inference)

    async def completion(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._infer("/v1/completions", body, self.timeouts.inference)

    async def embeddings(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._infer("/v1/embeddings", body, self.timeouts.inference)

    async def probe(self, model: str) -> ProbeResult:
        """A one-token, temperature-0 completion: proves the engine decodes, not just listens."""
        body = {"model": model, "prompt": "ping", "max_tokens": 1, "temperature": 0}
        started = time.monotonic()
        answer = await self._infer("/v1/completions", body, self.timeouts.probe)
        latency = time.monotonic() - started
        choices = answer.get("choices") or [{}]
        first = choices[0] if isinstance(choices[0], dict) else {}
        return ProbeResult(text=str(first.get("text", "")), latency_s=latency)
