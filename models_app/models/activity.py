"""Per-request activity: finished gateway requests, those in flight, and the capture switch."""

from __future__ import annotations

from django.db import models


class RequestRecord(models.Model):
    """One finished gateway request (written in batches by its web process; pruned to the
    retention settings). Prompt and answer text only while an admin turned capture on."""

    request_id = models.CharField(max_length=32)  # unique per web process's lifetime
    started_at = models.DateTimeField(db_index=True)
    path = models.CharField(max_length=32)
    model = models.CharField(max_length=128)
    # Not a foreign key: a batch must never fail because a key was deleted meanwhile.
    key_id = models.PositiveIntegerField(null=True, blank=True)
    client = models.CharField(max_length=64, blank=True)
    stream = models.BooleanField(default=False)
    status = models.PositiveSmallIntegerField()
    cancelled = models.BooleanField(default=False)  # by an operator
    wait_ms = models.FloatField(null=True, blank=True)  # waiting for a switch (a slot)
    ttft_ms = models.FloatField(null=True, blank=True)  # to the answer's first byte
    duration_ms = models.FloatField()
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    instance = models.CharField(max_length=64, blank=True)  # the web process
    prompt_text = models.TextField(blank=True)
    completion_text = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["model", "started_at"], name="request_model_at")]

    def __str__(self) -> str:
        return f"{self.model} {self.status} at {self.started_at:%H:%M:%S}"


class LiveRequests(models.Model):
    """The requests one web process has in flight (its report, rewritten when they change
    and at least every few seconds while any is in flight; removed at its shutdown)."""

    instance = models.CharField(max_length=64, unique=True)
    pid = models.PositiveIntegerField()
    requests = models.JSONField(default=list)
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.instance}: {len(self.requests)} in flight"


class ActivitySettings(models.Model):
    """Whether prompt and answer text is kept (one row; only an admin changes it)."""

    SINGLETON_PK = 1

    capture = models.BooleanField(default=False)
    changed_by = models.CharField(max_length=150, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"capture {'on' if self.capture else 'off'}"

    @classmethod
    def capture_on(cls) -> bool:
        """Read only: no row means the default, off."""
        row = cls.objects.filter(pk=cls.SINGLETON_PK).values_list("capture", flat=True).first()
        return bool(row)
