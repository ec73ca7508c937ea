"""Roles: admin (superuser), operator and viewer (Django groups). Viewers only look.

Shared by the dashboard and the REST API: one answer to "may this user change things".
"""

from __future__ import annotations

from typing import Any, Literal

Role = Literal["admin", "operator", "viewer"]
OPERATOR_GROUP = "operator"
VIEWER_GROUP = "viewer"


def role_of(user: Any) -> Role | None:
    """The user's role; None for anonymous users. No group means viewer: least rights."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return None
    if user.is_superuser:
        return "admin"
    if user.groups.filter(name=OPERATOR_GROUP).exists():
        return "operator"
    return "viewer"


def can_act(user: Any) -> bool:
    """Whether `user` may change anything (the server checks this on every action)."""
    return role_of(user) in ("admin", "operator")
