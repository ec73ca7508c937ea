"""Websocket routes (the ASGI router authenticates them by session and checks Origin)."""

from django.urls import path

from dashboard.consumers import StatusConsumer

websocket_urlpatterns = [path("ws/status/", StatusConsumer.as_asgi())]
