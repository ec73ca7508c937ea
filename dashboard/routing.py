"""Websocket routes, authenticated by session and checked for their Origin."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.urls import path

from dashboard.consumers import StatusConsumer

websocket_urlpatterns = [path("ws/status/", StatusConsumer.as_asgi())]
DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]  # scheme, host, port


def _origin(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) origin, the port made explicit; None if it is
    not one (an opaque "null" origin, a path, a bad port)."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port is None or parts.path:
        return None
    return parts.scheme, parts.hostname.lower(), port


def _trusted(origin: Origin, url: str) -> bool:
    """Whether `origin` is the trusted origin `url` (`https://*.example.com` admits its
    subdomains, as Django's CSRF check does)."""
    wildcard = "://*." in url
    trusted = _origin(url.replace("://*.", "://", 1))
    if trusted is None or (trusted[0], trusted[2]) != (origin[0], origin[2]):
        return False
    return origin[1] == trusted[1] or (wildcard and origin[1].endswith("." + trusted[1]))


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin1")
    return ""


def _scheme(scope: dict[str, Any]) -> str:
    """The scheme of the page that opened this socket: https behind a TLS proxy that
    says so in the header settings.SECURE_PROXY_SSL_HEADER names."""
    if scope.get("scheme") == "wss":
        return "https"
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, value = proxy
        header = name.removeprefix("HTTP_").lower().replace("_", "-").encode()
        if _header(scope, header).split(",")[0].strip() == value:
            return "https"
    return "http"


def same_origin(scope: dict[str, Any]) -> bool:
    """Whether the socket's Origin is this site's own (scheme, host and port of the
    request's Host, which must be in ALLOWED_HOSTS) or one of CSRF_TRUSTED_ORIGINS."""
    origin = _origin(_header(scope, b"origin"))
    if origin is None:
        return False
    if any(_trusted(origin, url) for url in settings.CSRF_TRUSTED_ORIGINS):
        return True
    host = _header(scope, b"host")
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    return origin == _origin(f"{_scheme(scope)}://{host}")


class SameOriginValidator:
    """Refuses a websocket whose Origin is not this site's own. channels'
    AllowedHostsOriginValidator compares the host alone, so another site served from the
    same host on another port could open the socket with a user's cookies."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if same_origin(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)


def websocket_application() -> Any:
    """The dashboard's websockets: only pages of this site may open one (no other site
    can read it with an operator's cookie), and only a logged-in session gets data."""
    return SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
