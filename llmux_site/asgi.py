"""ASGI entry point of the web process.

`/v1/` (and vLLM's `/tokenize` and `/detokenize`) goes straight to the gateway, a lean ASGI
app (no Django request handling, no middleware, no thread hop per request: DESIGN.md
measured Django's handler at about half the throughput). Everything else (pages, admin,
API, static assets) is Django.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmux_site.settings")

django_app = get_asgi_application()

# Imported after Django is set up: the backend reads the registry through the ORM.
from django.conf import settings  # noqa: E402

from dashboard.routing import websocket_application  # noqa: E402
from llmux_site.gateway.activity import Activity  # noqa: E402
from llmux_site.gateway.app import TOKENIZER_ENDPOINTS, GatewayApp  # noqa: E402
from llmux_site.gateway.proxies import TrustedProxies  # noqa: E402
from llmux_site.gateway.tuning import tune_web_process  # noqa: E402
from llmux_site.pages import static_pages  # noqa: E402
from llmux_site.side_ports import SidePorts, refuse  # noqa: E402
from models_app import metrics  # noqa: E402
from models_app.adapters.gateway import (  # noqa: E402
    ActivityReport,
    DjangoGatewayBackend,
    GatewayKeys,
    capture_setting,
    rate_window,
)

tune_web_process()
keys = GatewayKeys.create(
    required=settings.LLMUX_API_KEYS_REQUIRED,
    # `auto` on loopback: callers a trusted proxy forwards from beyond loopback need one.
    required_remote=settings.LLMUX_REQUIRE_API_KEY == "auto",
    window=rate_window(),
)
backend = DjangoGatewayBackend.create(keys=keys)
# Each request in flight and each finished one, for the dashboard's requests view: kept in
# memory on the request path, written in batches by the report's background task.
activity = Activity(capture=capture_setting())
activity_report = ActivityReport(activity, backend.instance_id)
activity_report.attach()
gateway = GatewayApp(
    backend,
    max_body_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
    keys=keys,
    on_usage=keys.record,
    on_request=metrics.observe_request,
    # The hosts Django answers for pages (with its DEBUG fallback when none are set).
    allowed_hosts=settings.ALLOWED_HOSTS
    or ([".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else []),
    activity=activity,
)
backend.close_upstream = gateway.upstreams.close  # connections close before a drain ack
pages = static_pages(django_app)
websockets = websocket_application()  # the dashboard's live status

# Applied here once, for every scope type, so the gateway, Django (REMOTE_ADDR) and the
# websockets all see the client a trusted reverse proxy saw (LLMUX_TRUSTED_PROXIES).
proxies = TrustedProxies(settings.LLMUX_TRUSTED_PROXIES)

GATEWAY_PREFIX = "/v1/"
# vLLM's tokenizer routes, at the root as vLLM serves them: forwarded like `/v1/`.
GATEWAY_PATHS = frozenset(TOKENIZER_ENDPOINTS)


# llmux's admin_port and metrics_port, where `llmux serve` listens on them (None: on
# neither, and nothing is looked at per request).
side_ports = (
    SidePorts(settings.LLMUX_ADMIN_PORT, settings.LLMUX_METRICS_PORT)
    if settings.LLMUX_ADMIN_PORT or settings.LLMUX_METRICS_PORT
    else None
)


async def application(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if proxies and scope["type"] != "lifespan":
        scope = proxies.real_client(scope)
    if side_ports and scope["type"] != "lifespan" and (reason := side_ports.refuses(scope)):
        await refuse(scope, send, reason)
        return
    if scope["type"] == "http" and (
        scope["path"].startswith(GATEWAY_PREFIX) or scope["path"] in GATEWAY_PATHS
    ):
        await gateway(scope, receive, send)
    elif scope["type"] == "websocket":
        await websockets(scope, receive, send)
    else:
        await pages(scope, receive, send)
