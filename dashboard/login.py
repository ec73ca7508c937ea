"""The login forms of the dashboard and the Django admin, both throttled.

Thin: the counting and the lock are models_app.services.login_throttle's.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from models_app.services import login_throttle


class ThrottledLoginMixin:
    """Refuses any attempt while the account or the address is locked; counts failures."""

    request: Any
    cleaned_data: dict[str, Any]

    def clean(self) -> dict[str, Any]:
        attempt = login_throttle.Attempt(
            username=str(self.cleaned_data.get("username") or ""),
            address=str(getattr(self.request, "META", {}).get("REMOTE_ADDR", "")),
        )
        if login_throttle.locked(attempt):
            minutes = login_throttle.window_minutes()
            raise ValidationError(
                f"Too many failed logins for this account or from this address: "
                f"try again in {minutes} minute{'s' if minutes > 1 else ''}.",
                code="throttled",
            )
        try:
            cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        except ValidationError:
            if getattr(self, "user_cache", None) is None:  # a wrong password, not a
                login_throttle.record_failure(attempt)  # right one refused for its role
            raise
        login_throttle.record_success(attempt)
        return cleaned


class ThrottledLoginForm(ThrottledLoginMixin, AuthenticationForm):
    """The dashboard's `/login/`."""


class ThrottledAdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    """The admin's `/admin/login/` (staff only, as Django's own)."""
