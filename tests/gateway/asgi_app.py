"""The ASGI application the gateway tests run under daphne.

The standalone gateway (``GatewayApp(StaticBackend)`` from ``LLMUX_GATEWAY_CONFIG``) plus
``GET /_backend``: the backend's slot counts, so a test can check from outside the process
that every slot was released exactly once.
"""

from __future__ import annotations

import json
from typing import Any

from llmux_site.gateway.backend import StaticBackend
from llmux_site.gateway.standalone import from_environment

gateway = from_environment()
assert isinstance(gateway.backend, StaticBackend)
backend = gateway.backend


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/_backend":
        body = json.dumps(backend.snapshot()).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    await gateway(scope, receive, send)
