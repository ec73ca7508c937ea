"""llmux's `admin_port` and `metrics_port`: loopback listeners that serve one thing each.

When the config sets them, `llmux serve` gives every web process a socket on
127.0.0.1:admin_port and one on 127.0.0.1:metrics_port beside its main one (llmux_site/
serve.py). As llmux serves them, the admin port answers `/control/*` without
authentication and the metrics port answers `/metrics`; anything else there is 404.
Bound to loopback only: whoever can connect already runs code on the host. Which
listener a request came in on is the socket's own port (ASGI's `server`), never a header.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

CONTROL_PREFIX = "/control/"
METRICS_PATH = "/metrics"


@dataclass(frozen=True)
class SidePorts:
    admin: int | None
    metrics: int | None

    def kind(self, scope: MutableMapping[str, Any]) -> str | None:
        """ "admin" or "metrics" for a request on that listener; None on the main one."""
        server = scope.get("server") or (None, None)
        port = server[1] if len(server) > 1 else None
        if port is not None and port == self.admin:
            return "admin"
        if port is not None and port == self.metrics:
            return "metrics"
        return None

    def refuses(self, scope: MutableMapping[str, Any]) -> str | None:
        """Why a request on a side port is not served there (None: it is, or it is not on
        a side port)."""
        kind = self.kind(scope)
        path = scope.get("path", "")
        if kind == "admin" and (scope["type"] != "http" or not path.startswith(CONTROL_PREFIX)):
            return f"port {self.admin} (admin_port) serves only {CONTROL_PREFIX}"
        if kind == "metrics" and (scope["type"] != "http" or path != METRICS_PATH):
            return f"port {self.metrics} (metrics_port) serves only {METRICS_PATH}"
        return None


async def refuse(
    scope: MutableMapping[str, Any],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    reason: str,
) -> None:
    """404 with the reason (an HTTP request), or a closed websocket."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4404})
        return
    body = json.dumps({"error": f"not found: {reason}"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})
