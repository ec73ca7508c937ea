"""The OpenAI-compatible gateway as a plain ASGI3 application: the request hot path.

No Django, no ORM, no middleware: a request for an active model costs one pass over its
headers (Host, Content-Type, key), one dict lookup to dispatch, one JSON parse, the
backend's ``resolve``/``acquire`` and one forwarded request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final

from llmux_site.gateway.activity import Activity, LiveRequest, ResponseTap, end_cancelled
from llmux_site.gateway.backend import GatewayBackend, Slot
from llmux_site.gateway.checks import check_fields, parse_body, reencode
from llmux_site.gateway.errors import EngineUnreachableError, GatewayError
from llmux_site.gateway.hosts import AllowedHosts
from llmux_site.gateway.keys import (
    Grant,
    KeyCheck,
    KeyRecord,
    UsageMeter,
    UsageSink,
    may_use,
    out_of_scope,
)
from llmux_site.gateway.proxy import (
    FORWARDED_REQUEST_HEADERS,
    Send,
    UpstreamPool,
    relay,
)
from llmux_site.gateway.stream_usage import ask_for_usage

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
# A route's handler; the last argument is the caller's key (None: anonymous).
Handler = Callable[[Scope, Receive, Send, KeyRecord | None], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES: Final = 8 * 1024 * 1024
# The only paths forwarded to engines: vLLM's inference routes, each naming its `model` in
# a JSON body. vLLM serves others beside them (loading and unloading LoRA adapters, sleep,
# wake, collective RPC, ...) that act on the engine itself; no client may reach those.
# Its tokenizer routes are at the root, not under /v1/ (llmux_site/asgi.py sends them here).
TOKENIZER_ENDPOINTS: Final = ("/tokenize", "/detokenize")
INFERENCE_ENDPOINTS: Final = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/rerank",
    "/v1/score",
    *TOKENIZER_ENDPOINTS,
)
MODELS_PATH: Final = "/v1/models"
JSON_TYPE: Final = b"application/json"


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class DisconnectWatch:
    """Cancels the request's task when the client disconnects (``http.disconnect``).

    ASGI only reports a disconnect through ``receive``, which nobody calls once the body is
    read; this waits on it beside the request so a gone client stops a switch wait or an
    upstream generation at once, instead of when the server gives up on the task.
    """

    __slots__ = ("_task", "_watcher", "gone")

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._task = asyncio.current_task()
        self._watcher: asyncio.Future[Message] = asyncio.ensure_future(receive())
        self._watcher.add_done_callback(self._on_message)

    def _on_message(self, watcher: asyncio.Future[Message]) -> None:
        if watcher.cancelled() or watcher.exception() is not None:
            return
        if watcher.result().get("type") == "http.disconnect" and self._task is not None:
            self.gone = True
            self._task.cancel()

    def stop(self) -> None:
        self._watcher.remove_done_callback(self._on_message)
        self._watcher.cancel()


# Hears each request on a known model once it ended: (model, status, seconds to the
# first byte or None); 499 when the client left before any answer.
RequestObserver = Callable[[str, int, float | None], None]


class GatewayApp:
    """ASGI3 application for http scopes under ``/v1/`` and vLLM's tokenizer routes (lifespan
    closes the sessions)."""

    def __init__(
        self,
        backend: GatewayBackend,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        keys: KeyCheck | None = None,
        on_usage: UsageSink | None = None,
        on_request: RequestObserver | None = None,
        allowed_hosts: Iterable[str] | None = None,
        activity: Activity | None = None,
    ) -> None:
        self.backend = backend
        self.activity = activity  # None: requests are not recorded one by one
        self.max_body_bytes = max_body_bytes
        self.keys = keys  # None: no API keys at all (the standalone gateway)
        self.on_usage = on_usage
        self.on_request = on_request  # (public model, status, seconds to the first byte)
        # Django's ALLOWED_HOSTS, passed in (this package imports no Django); None: any.
        self.hosts = None if allowed_hosts is None else AllowedHosts(allowed_hosts)
        self.upstreams = UpstreamPool()
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", MODELS_PATH): self._list_models,
            **{("POST", path): self._forward for path in INFERENCE_ENDPOINTS},
        }
        self._known_paths = frozenset(path for _method, path in self._routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                record = await self._screen(scope)
            except GatewayError as exc:
                await send_error(send, exc)
                return
            handler = self._routes.get((scope["method"], scope["path"]))
            if handler is None:
                handler = self._fallback(scope)
            await handler(scope, receive, send, record)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(f"the gateway serves http scopes only, not {kind!r}")

    async def aclose(self) -> None:
        """Close every upstream session (lifespan shutdown calls this)."""
        await self.upstreams.aclose()

    async def _screen(self, scope: Scope) -> KeyRecord | None:
        """Refuse a foreign Host (400) and a POST that is not JSON (415), then identify the
        caller (401): before any route, body or model name is looked at."""
        host = content_type = authorization = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"content-type":
                content_type = value
            elif name == b"authorization":
                authorization = value
        if self.hosts is not None:
            named = _request_host(scope, host)
            if not self.hosts.allows(named):
                raise GatewayError(400, f"Invalid Host header: {named[:200]!r}.")
        if scope["method"] == "POST" and content_type != JSON_TYPE and not _is_json(content_type):
            raise GatewayError(
                415, "The request body must be JSON: send `Content-Type: application/json`."
            )
        if self.keys is None:
            return None
        client = scope.get("client")
        return await self.keys.identify(
            None if authorization is None else authorization.decode("latin-1"),
            client[0] if client else None,
        )

    def _fallback(self, scope: Scope) -> Handler:
        path: str = scope["path"]
        if scope["method"] == "GET" and path.startswith(MODELS_PATH + "/"):
            return self._retrieve_model
        if path in self._known_paths:
            return _method_not_allowed
        return _not_found

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _list_models(
        self, scope: Scope, receive: Receive, send: Send, record: KeyRecord | None
    ) -> None:
        data = await self.backend.list_models()
        if record is not None and record.scopes:
            resolve = self.backend.resolve
            data = [entry for entry in data if may_use(record, entry["id"], resolve)]
        await send_json(send, 200, {"object": "list", "data": data})

    async def _retrieve_model(
        self, scope: Scope, receive: Receive, send: Send, record: KeyRecord | None
    ) -> None:
        name = scope["path"][len(MODELS_PATH) + 1 :]
        if not may_use(record, name, self.backend.resolve):
            await send_error(send, out_of_scope(name))
            return
        public = self.backend.resolve(name)
        for entry in await self.backend.list_models() if public is not None else ():
            if entry.get("id") == public:
                await send_json(send, 200, entry)
                return
        await send_error(send, GatewayError(404, f"The model `{name}` does not exist."))

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, record: KeyRecord | None
    ) -> None:
        """Read and check the body, take a slot on the model, relay to its engine."""
        try:
            headers, body, payload, public = await self._read_request(scope, receive, record)
            grant = None
            if record is not None and self.keys is not None:
                # Counted last: a request refused for any other reason uses none of its rate.
                grant = await self.keys.admit(record)
        except GatewayError as exc:
            await send_error(send, exc)
            return
        except ClientGone:
            return
        watch = DisconnectWatch(receive)
        live = self._begin(scope, public, record, payload, body)
        tap = ResponseTap(send) if self.on_request is not None or live is not None else None
        if tap is not None:
            send = tap.send
        if live is not None and live.prompt is not None:  # capture is on
            send = live.capture(send)
        try:
            await self._admit_and_relay(scope, send, public, payload, body, headers, grant, live)
        except GatewayError as exc:
            await send_error(send, exc)
        except Exception:
            # A bug, not a client or engine failure: say so in OpenAI's shape if the
            # response has not started yet (daphne refuses a second start otherwise).
            logger.exception("the gateway failed on a request for %s", public)
            with contextlib.suppress(Exception):
                await send_error(send, GatewayError(500, "The gateway failed on this request."))
        except asyncio.CancelledError:
            operator = live is not None and live.cancelled
            if not watch.gone and not operator:
                raise
            # We cancelled ourselves because the client left or an operator cancelled the
            # request: not an error of the app.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if operator and not watch.gone:
                with contextlib.suppress(Exception):
                    await end_cancelled(send, tap.status if tap else 0, tap is not None and tap.sse)
        finally:
            watch.stop()
            if tap is not None:
                self._observe(public, tap, live)

    def _begin(
        self, scope: Scope, public: str, record: KeyRecord | None, payload: Any, body: bytes
    ) -> LiveRequest | None:
        """The request's entry among those in flight (None when activity is not recorded)."""
        if self.activity is None:
            return None
        client = scope.get("client")
        key_id = record.key_id if record is not None else None
        address = str(client[0]) if client else ""
        return self.activity.begin(scope["path"], public, key_id, address, payload, body)

    def _observe(self, public: str, tap: ResponseTap, live: LiveRequest | None) -> None:
        status, ttfb = tap.status or 499, tap.first_byte_after()
        if self.on_request is not None:
            self.on_request(public, status, ttfb)
        if live is not None and self.activity is not None:
            self.activity.end(live, status, ttfb, live.usage)

    async def _read_request(
        self, scope: Scope, receive: Receive, record: KeyRecord | None
    ) -> tuple[list[tuple[str, str]] | None, bytes, dict[str, Any], str]:
        """Headers to forward, body, payload and public model of a request the key may make."""
        headers, length = _request_headers(scope)
        if length is not None and length > self.max_body_bytes:
            raise _too_large(self.max_body_bytes)
        body = await self._read_body(receive)
        payload, model = parse_body(body)
        check_fields(scope["path"], payload)
        # The scope first: to a scoped key, a name it may not use is refused the same way
        # whether a model has it or not, so keys cannot probe which models exist.
        if not may_use(record, model, self.backend.resolve):
            raise out_of_scope(model)
        public = self.backend.resolve(model)
        if public is None:
            raise GatewayError(404, f"The model `{model}` does not exist.", param="model")
        return headers, body, payload, public

    async def _admit_and_relay(
        self,
        scope: Scope,
        send: Send,
        public: str,
        payload: dict[str, Any],
        body: bytes,
        headers: list[tuple[str, str]] | None,
        grant: Grant | None = None,
        live: LiveRequest | None = None,
    ) -> None:
        backend = self.backend
        deadline = asyncio.get_running_loop().time() + backend.request_timeout()
        for attempt in range(2):
            try:
                await self._relay_once(
                    scope, send, public, payload, body, headers, deadline, grant, live
                )
                return
            except EngineUnreachableError:
                # The engine died under us (nothing was sent to the client): when the
                # backend confirms it, acquiring again brings it back; one retry only.
                if attempt or not await backend.upstream_failed(public):
                    raise

    async def _relay_once(
        self,
        scope: Scope,
        send: Send,
        public: str,
        payload: dict[str, Any],
        body: bytes,
        headers: list[tuple[str, str]] | None,
        deadline: float,
        grant: Grant | None = None,
        live: LiveRequest | None = None,
    ) -> None:
        slot = await self._acquire(public, deadline, live)
        metered = (grant is not None and self.on_usage is not None) or live is not None
        meter = UsageMeter() if metered else None
        try:
            route = slot.route
            if route.rewrite_model and payload["model"] != route.served_name:
                payload = {**payload, "model": route.served_name}
                body = reencode(payload)
            if meter is not None and (asked := ask_for_usage(scope["path"], payload)):
                payload, body = asked, reencode(asked)
                meter.hide_usage_event()
            upstream = self.upstreams.get(route.upstream)
            # The route's own path, not the client's spelling of it: only what the
            # allow-list names is ever sent to the engine.
            url = upstream.url(scope["path"].encode(), scope["query_string"])
            try:
                out = meter.wrap(send) if meter is not None else send
                await relay(upstream, scope["method"], url, headers, body, out, slot.confirmed)
            except GatewayError:
                # An early slot's engine is stopped when its readiness fails: then the
                # switch's failure (503 with its reason) is the answer, not the broken
                # connection. A confirmed slot re-raises the engine's own error.
                await slot.confirmed()
                raise
        finally:
            slot.release()
        if meter is not None:
            usage = meter.finish()
            if live is not None:
                live.usage = usage
            if grant is not None and self.on_usage is not None:
                # Every answered request counts; its tokens when the engine said them.
                self.on_usage(grant, public, usage or {})

    async def _acquire(self, public: str, deadline: float, live: LiveRequest | None) -> Slot:
        if live is None:
            return await self.backend.acquire(public, deadline=deadline)
        started = time.monotonic()
        try:
            return await self.backend.acquire(public, deadline=deadline)
        finally:
            live.note_wait(time.monotonic() - started)

    async def _read_body(self, receive: Receive) -> bytes:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            chunks.append(chunk)
        return b"".join(chunks)


def _is_json(content_type: bytes | None) -> bool:
    """Whether a Content-Type is JSON's, parameters (charset) and case aside."""
    if content_type is None:
        return False
    return content_type.partition(b";")[0].strip().lower() == JSON_TYPE


def _request_host(scope: Scope, header: bytes | None) -> str:
    """The host a request names: its Host header, else the server's address and port
    (unless the scheme's default), as Django's ``HttpRequest.get_host`` builds it."""
    if header is not None:
        return header.decode("latin-1")
    server = scope.get("server")
    name, port = (str(server[0]), str(server[1])) if server else ("unknown", "0")
    default = "443" if scope.get("scheme") == "https" else "80"
    return name if port == default else f"{name}:{port}"


def _request_headers(scope: Scope) -> tuple[list[tuple[str, str]] | None, int | None]:
    """The headers to forward (as aiohttp takes them, or None) and the Content-Length."""
    headers: list[tuple[str, str]] | None = None
    length: int | None = None
    for name, value in scope["headers"]:
        if name in FORWARDED_REQUEST_HEADERS:
            if headers is None:
                headers = []
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        elif name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                raise GatewayError(400, "Content-Length is not a number.") from None
    return headers, length


def _too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"The request body is larger than {limit} bytes.")


async def send_json(send: Send, status: int, payload: Any) -> None:
    await send_bytes(send, status, json.dumps(payload).encode())


async def send_bytes(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: GatewayError) -> None:
    await send_bytes(send, error.status, error.body(), error.headers)


async def _not_found(scope: Scope, receive: Receive, send: Send, _record: KeyRecord | None) -> None:
    await send_error(send, GatewayError(404, f"Not found: {scope['method']} {scope['path']}"))


async def _method_not_allowed(
    scope: Scope, receive: Receive, send: Send, _record: KeyRecord | None
) -> None:
    await send_error(
        send, GatewayError(405, f"Method {scope['method']} is not allowed on {scope['path']}.")
    )
