"""Websocket routes, authenticated by session and checked for their Origin."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from dashboard.consumers import StatusConsumer

websocket_urlpatterns = [path("ws/status/", StatusConsumer.as_asgi())]


def websocket_application() -> Any:
    """The dashboard's websockets: only pages of ALLOWED_HOSTS may open one (no other
    site can read it with an operator's cookie), and only a logged-in session gets data."""
    return AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
