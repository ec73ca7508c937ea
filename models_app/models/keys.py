"""Gateway API keys: stored hashed, found by a prefix, scoped, limited, counted."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class KeyKind(models.TextChoices):
    """Who a key is for: a client an administrator gave it to, or the dashboard's
    playground, which mints a short-lived one for the logged-in user (docs/API.md)."""

    CLIENT = "client", "client"
    PLAYGROUND = "playground", "playground"


class ApiKey(models.Model):
    """A client's key for `/v1/`; the secret itself is shown once and never stored."""

    name = models.CharField(max_length=128)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)  # SHA-256 of the secret part
    scopes = models.JSONField(
        default=list, blank=True, help_text="model names or aliases; empty means every model"
    )
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="requests/minute")
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)
    kind = models.CharField(max_length=16, choices=KeyKind.choices, default=KeyKind.CLIENT)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    requests = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} (llmux-{self.prefix}-…)"
