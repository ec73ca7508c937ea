"""Who may call what: viewers read, operators and admins act, admins manage users."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated

from models_app.roles import can_act, role_of


class RolePermission(BasePermission):
    """Any role may read; writes need operator or admin (the audit records refusals)."""

    message = "viewers can read but not change anything"

    def has_permission(self, request: Any, view: Any) -> bool:
        if role_of(request.user) is None:
            return False
        return request.method in SAFE_METHODS or can_act(request.user)


class AdminOnly(BasePermission):
    message = "only administrators may do this"

    def has_permission(self, request: Any, view: Any) -> bool:
        return role_of(request.user) == "admin"


# What most endpoints need: a login, and a role that may do what the method does.
PERMISSIONS = [IsAuthenticated, RolePermission]
