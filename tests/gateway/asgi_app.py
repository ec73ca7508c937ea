"""The ASGI application the gateway tests run under daphne.

The standalone gateway (``GatewayApp(StaticBackend)`` from ``LLMUX_GATEWAY_CONFIG``) plus
``GET /_backend``: the backend's slot counts, so a test can check from outside the process
that every slot was released exactly once. With ``LLMUX_TEST_ACTIVITY=1`` (``capture``: and
its text) the gateway also records its activity: ``GET /_activity`` answers what is in
flight and what finished since the last call, ``POST /_cancel?<request id>`` cancels as an
operator's bus message does.
"""

from __future__ import annotations

import json
import os
from typing import Any

from llmux_site.gateway.activity import Activity
from llmux_site.gateway.backend import StaticBackend
from llmux_site.gateway.standalone import from_environment

gateway = from_environment()
assert isinstance(gateway.backend, StaticBackend)
backend = gateway.backend
if os.environ.get("LLMUX_TEST_ACTIVITY") in ("1", "capture"):
    gateway.activity = Activity(capture=os.environ["LLMUX_TEST_ACTIVITY"] == "capture")


def _inspect(path: str, query: bytes) -> Any:
    if path == "/_backend":
        return backend.snapshot()
    activity = gateway.activity
    assert activity is not None
    if path == "/_cancel":
        return activity.cancel(query.decode())
    finished = [done._asdict() for done in activity.take_finished()]
    return {"live": activity.live_rows(), "finished": finished}


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] in ("/_backend", "/_activity", "/_cancel"):
        body = json.dumps(_inspect(scope["path"], scope["query_string"])).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    await gateway(scope, receive, send)
