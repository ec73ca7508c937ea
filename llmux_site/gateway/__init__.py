"""The OpenAI-compatible gateway's hot path: a lean ASGI application, no Django.

``asgi.py`` routes ``/v1/`` to a ``GatewayApp`` built around a ``GatewayBackend``; the
backend decides which engine serves a model and whether it must be switched in first.
"""

from __future__ import annotations

from llmux_site.gateway.app import GatewayApp
from llmux_site.gateway.backend import GatewayBackend, Route, Slot, StaticBackend
from llmux_site.gateway.errors import GatewayError

__all__ = ["GatewayApp", "GatewayBackend", "GatewayError", "Route", "Slot", "StaticBackend"]
