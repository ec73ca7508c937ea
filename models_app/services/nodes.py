"""Hosts known to this registry."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from models_app.models import Node


def register_local_node() -> Node:
    """Upsert this host's Node row and stamp its heartbeat."""
    node, _ = Node.objects.update_or_create(
        name=settings.NODE_NAME,
        defaults={"cluster": settings.Q_CLUSTER["name"], "heartbeat_at": timezone.now()},
    )
    return node
