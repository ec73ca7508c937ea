"""Management API tokens (`Authorization: Token ...`): stored hashed, found by a prefix."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """A user's token for the management API; the token itself is shown once, never stored.

    Only the SHA-256 of the whole token is kept, with its first characters as a prefix to
    find the row: reading the database (or a backup of it) gives no working token.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=128, blank=True, help_text="what uses it")
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user__username", "id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name or 'token'} of {self.user} ({self.prefix}…)"
