"""The gateway's ASGI lifespan: its upstream sessions close on shutdown."""

from __future__ import annotations

from typing import Any

from llmux_site.core.addresses import ListenAddress
from llmux_site.gateway import GatewayApp, Route, StaticBackend


async def test_lifespan_shutdown_closes_every_upstream_session() -> None:
    address = ListenAddress.tcp(9)
    app = GatewayApp(StaticBackend([Route("m", address, "m", rewrite_model=False)]))
    session = app.upstreams.get(address).session
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)

    assert [message["type"] for message in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert session.closed
