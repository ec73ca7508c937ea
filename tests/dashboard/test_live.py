"""`/ws/status/` with the in-memory channel layer and with channels_redis (real Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client, override_settings

from dashboard import live
from dashboard.routing import websocket_application
from models_app.models import ModelDefinition

pytestmark = pytest.mark.django_db(transaction=True)

LAYERS = {
    "in-memory": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    "redis": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": ["redis://127.0.0.1:6379/3"]},
    },
}


@pytest.fixture(params=list(LAYERS))
def layer(request: pytest.FixtureRequest) -> Iterator[str]:
    with override_settings(CHANNEL_LAYERS={"default": LAYERS[request.param]}):
        channel_layers.backends.clear()
        live._broadcaster = None  # one per process: a fresh one on this layer
        yield request.param
    channel_layers.backends.clear()
    live._broadcaster = None


def session_cookie() -> str:
    user = User.objects.create_user("watcher", password="watcher-password-1")
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def communicator(
    cookie: str | None, origin: str = "http://127.0.0.1", host: str = "127.0.0.1"
) -> WebsocketCommunicator:
    headers = [(b"origin", origin.encode()), (b"host", host.encode())]
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return WebsocketCommunicator(websocket_application(), "/ws/status/", headers=headers)


async def next_snapshot(socket: WebsocketCommunicator, timeout: float = 5) -> dict[str, Any]:
    message = await socket.receive_json_from(timeout=timeout)
    assert message["kind"] == "snapshot"
    return dict(message["data"])


async def test_a_snapshot_on_connect_then_live_ones_on_change(layer: str) -> None:
    cookie = await sync_to_async(session_cookie)()
    socket = communicator(cookie)
    connected, _ = await socket.connect()
    assert connected
    first = await next_snapshot(socket)
    assert first["models"] == [] and first["mode"] == "auto"

    # A registry change (its signal publishes on the host bus) reaches the page at once.
    await sync_to_async(ModelDefinition.objects.create)(
        name="fresh", model_path="sim/fresh", port=18999
    )
    for _ in range(5):
        snapshot = await next_snapshot(socket)
        if [m["name"] for m in snapshot["models"]] == ["fresh"]:
            break
    else:
        raise AssertionError("no snapshot with the new model arrived")
    assert snapshot["models"][0]["state"] == "not_started"
    await socket.disconnect()


async def test_a_socket_without_a_session_or_from_another_site_is_refused(layer: str) -> None:
    anonymous = communicator(None)
    connected, code = await anonymous.connect()
    assert not connected and code == 4401
    cookie = await sync_to_async(session_cookie)()
    foreign = communicator(cookie, origin="https://evil.example")
    connected, _ = await foreign.connect()
    assert not connected


@pytest.mark.parametrize(
    ("origin", "host", "accepted"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://localhost:8000", "localhost:8000", True),
        ("http://127.0.0.1", "127.0.0.1:80", True),  # the scheme's default port
        ("http://localhost:9999", "localhost:8000", False),  # another site on the host
        ("http://127.0.0.1:8000", "localhost:8000", False),
        ("https://127.0.0.1:8000", "127.0.0.1:8000", False),  # the socket is ws, not wss
        ("http://127.0.0.1:8000", "evil.example:8000", False),  # a Host not allowed
        ("null", "127.0.0.1:8000", False),
        ("https://dash.example", "127.0.0.1:8000", True),  # in CSRF_TRUSTED_ORIGINS
        ("https://dash.example:8443", "127.0.0.1:8000", False),
        ("https://eu.ops.example", "127.0.0.1:8000", True),  # https://*.ops.example
        ("https://ops.example.evil", "127.0.0.1:8000", False),
    ],
)
async def test_a_socket_is_accepted_only_from_the_page_of_its_own_origin(
    origin: str, host: str, accepted: bool
) -> None:
    cookie = await sync_to_async(session_cookie)()
    trusted = ["https://dash.example", "https://*.ops.example"]
    with override_settings(CSRF_TRUSTED_ORIGINS=trusted):
        socket = communicator(cookie, origin=origin, host=host)
        connected, _ = await socket.connect()
    assert connected == accepted
    await socket.disconnect()
