"""Forwarding to engines: one long-lived aiohttp session per upstream, bodies streamed through.

Everything here runs once per request, so it avoids work it can skip: URLs are parsed once
per (path, query) and cached, response headers are passed on as the raw bytes aiohttp read,
and a body that arrived whole is sent to the client in a single ASGI message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import aiohttp
from yarl import URL

from llmux_site.core.addresses import ListenAddress
from llmux_site.gateway.errors import GatewayError, as_openai_error, sse_error_event

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

# Headers of the client's request the engine gets; everything else (Host, hop-by-hop
# headers, cookies and above all Authorization, which is the gateway's key, not the
# engine's) stays behind. Content-Type is always set by the gateway: it parsed the JSON.
FORWARDED_REQUEST_HEADERS: Final = frozenset(
    {b"accept", b"accept-encoding", b"accept-language", b"x-request-id", b"traceparent"}
)
# Headers of the engine's answer that describe one hop only, or that daphne sets itself.
DROPPED_RESPONSE_HEADERS: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"server",
        b"date",
    }
)
# vLLM's uvicorn closes idle keep-alive connections after 5 s; a POST on a connection the
# engine is closing at that moment fails and cannot be retried safely, so give them up first.
KEEPALIVE_S: Final = 4.0
CONNECT_TIMEOUT_S: Final = 10.0
MAX_CONNECTIONS: Final = 4096
URL_CACHE_SIZE: Final = 256
READ_BUFSIZE: Final = 2**16
SSE_CONTENT_TYPE: Final = b"text/event-stream"
# What a broken or refused engine connection raises (a connect timeout is a TimeoutError).
ENGINE_ERRORS: Final = (aiohttp.ClientError, OSError, TimeoutError)


class Upstream:
    """One engine address: its aiohttp session and its parsed URLs."""

    __slots__ = ("_base", "_urls", "address", "session")

    def __init__(self, address: ListenAddress) -> None:
        self.address = address
        self._base = address.base_url()
        self._urls: dict[tuple[bytes, bytes], URL] = {}
        connector: aiohttp.BaseConnector
        if address.uds is not None:
            connector = aiohttp.UnixConnector(
                path=address.uds, limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S
            )
        else:
            connector = aiohttp.TCPConnector(
                limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S, use_dns_cache=True
            )
        self.session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            # Bodies pass through byte for byte; the client decompresses, if anyone.
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            # Every body the gateway forwards is JSON it has parsed itself.
            headers={"Content-Type": "application/json"},
            # No total or read timeout: a long generation is not a failure. Waiting for the
            # model is bounded by the backend's request timeout before we get here.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
            read_bufsize=READ_BUFSIZE,
        )

    def url(self, raw_path: bytes, query: bytes) -> URL:
        """The engine URL for a request path (percent-encoded, as sent) and query string."""
        key = (raw_path, query)
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= URL_CACHE_SIZE:
                self._urls.clear()
            text = self._base + raw_path.decode("latin-1")
            if query:
                text += "?" + query.decode("latin-1")
            url = self._urls[key] = URL(text, encoded=True)
        return url


class UpstreamPool:
    """The upstreams the gateway has talked to, created on first use, closed together."""

    __slots__ = ("_upstreams",)

    def __init__(self) -> None:
        self._upstreams: dict[ListenAddress, Upstream] = {}

    def get(self, address: ListenAddress) -> Upstream:
        upstream = self._upstreams.get(address)
        if upstream is None:
            upstream = self._upstreams[address] = Upstream(address)
        return upstream

    async def close(self, address: ListenAddress) -> None:
        """Close this process's connections to one engine; returns once they are closed
        (a later request opens new ones)."""
        upstream = self._upstreams.pop(address, None)
        if upstream is not None:
            await upstream.session.close()

    async def aclose(self) -> None:
        upstreams, self._upstreams = list(self._upstreams.values()), {}
        for upstream in upstreams:
            await upstream.session.close()


def response_headers(resp: aiohttp.ClientResponse) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The engine's headers to pass on, and whether the body is a server-sent event stream."""
    headers: list[tuple[bytes, bytes]] = []
    sse = False
    for name, value in resp.raw_headers:
        lower = name.lower()
        if lower in DROPPED_RESPONSE_HEADERS:
            continue
        if lower == b"content-type" and value.startswith(SSE_CONTENT_TYPE):
            sse = True
        headers.append((lower, value))
    return headers, sse


async def relay(
    upstream: Upstream,
    method: str,
    url: URL,
    headers: list[tuple[str, str]] | None,
    body: bytes,
    send: Send,
    before_start: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Forward one request and stream the answer to ``send`` as it arrives.

    Raises ``GatewayError`` (502) only while nothing has been sent to the client; once the
    response has started, an engine failure ends the stream (with an SSE error event when
    the body is an event stream) instead. Cancellation closes the engine connection.
    ``before_start`` runs once the engine's answer begins and before anything of it goes
    to the client (an early slot's confirmation); if it raises, the answer is dropped.
    """
    try:
        resp = await upstream.session.request(method, url, data=body, headers=headers)
    except ENGINE_ERRORS as exc:
        raise GatewayError.engine_unreachable(_describe(exc, upstream)) from None
    try:
        await _relay_response(resp, send, upstream, before_start)
    except BaseException:
        # Not fully read: the connection must not go back to the pool, and closing it is
        # how the engine learns that nobody waits for this generation any more.
        resp.close()
        raise
    resp.release()


async def _relay_response(
    resp: aiohttp.ClientResponse,
    send: Send,
    upstream: Upstream,
    before_start: Callable[[], Awaitable[None]] | None,
) -> None:
    if resp.status >= 400:
        if before_start is not None:
            await before_start()
        await _relay_error(resp, send, upstream)
        return
    headers, sse = response_headers(resp)
    content = resp.content
    try:
        chunk = await content.readany()
    except ENGINE_ERRORS as exc:
        raise GatewayError.engine_failed(_describe(exc, upstream)) from None
    if before_start is not None:
        await before_start()
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    last = chunk
    try:
        while chunk:
            if content.at_eof():
                await send({"type": "http.response.body", "body": chunk})
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            last = chunk
            chunk = await content.readany()
    except ENGINE_ERRORS as exc:
        if sse:
            # Terminate a half-written event first, so the error is an event of its own.
            prefix = b"" if last.endswith(b"\n\n") else b"\n" if last.endswith(b"\n") else b"\n\n"
            event = sse_error_event(
                502, GatewayError.engine_failed(_describe(exc, upstream)).message
            )
            await send({"type": "http.response.body", "body": prefix + event})
            return
        # A plain body cannot carry an error any more: end it short so the client sees
        # the break (its Content-Length, if any, is not met).
    await send({"type": "http.response.body", "body": b""})


async def _relay_error(resp: aiohttp.ClientResponse, send: Send, upstream: Upstream) -> None:
    """Pass an engine's error on, in OpenAI's shape even where the engine's body was not."""
    try:
        raw = await resp.read()
    except ENGINE_ERRORS as exc:
        raise GatewayError.engine_failed(_describe(exc, upstream)) from None
    body = as_openai_error(resp.status, raw)
    if body is raw:
        headers, _sse = response_headers(resp)
    else:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _describe(exc: BaseException, upstream: Upstream) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out connecting to {upstream.address}"
    detail = str(exc) or type(exc).__name__
    return f"{detail} ({upstream.address})"
