from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """Pages, actions and the live status websocket for operators."""

    name = "dashboard"
    verbose_name = "Dashboard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        user_logged_out.connect(_revoke_playground_keys, dispatch_uid="playground-logout")


def _revoke_playground_keys(user: Any = None, **_kwargs: Any) -> None:
    """Logging out ends the playground keys minted for this user (any logout view)."""
    from models_app.services import playground_keys

    playground_keys.revoke_at_logout(user)
