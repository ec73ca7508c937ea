"""Audit of management actions: who did what, when, from where, and how it ended."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditResult(models.TextChoices):
    OK = "ok", "Done"
    QUEUED = "queued", "Queued"
    REFUSED = "refused", "Refused"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"  # a queued operation the worker found nothing to do for


class AuditEntry(models.Model):
    """One write through the dashboard or the API; append-only, except that a queued
    operation's entry gets the operation's outcome when it ends."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)  # kept after a user is deleted
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=256, blank=True)
    source = models.CharField(max_length=16, default="dashboard")  # dashboard, api, cli
    remote_addr = models.CharField(max_length=64, blank=True)
    result = models.CharField(max_length=16, choices=AuditResult.choices)
    detail = models.TextField(blank=True)
    # The queued operation (SwitchRequest id) of a lifecycle action: when it ends, the
    # entry's result becomes its outcome (services.audit.close_operation).
    operation = models.PositiveBigIntegerField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor_name or '-'} {self.action} {self.target} ({self.result})"
