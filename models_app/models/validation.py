"""Results of `llmux_validate`: does a model sleep and wake correctly under a policy."""

from __future__ import annotations

from django.db import models

from .choices import Verdict
from .definitions import ModelDefinition


class ValidationRun(models.Model):
    """One policy checked on one model: eviction and bring-up timed, memory, answer."""

    batch = models.CharField(max_length=32, db_index=True, help_text="one llmux_validate call")
    model = models.ForeignKey(
        ModelDefinition, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model_name = models.CharField(max_length=128)
    policy = models.CharField(max_length=32)
    passed = models.BooleanField(default=False)  # verdict == pass
    verdict = models.CharField(max_length=16, choices=Verdict.choices, default=Verdict.FAIL)
    evict_ms = models.FloatField(null=True, blank=True)
    bringup_ms = models.FloatField(null=True, blank=True)
    bringup = models.CharField(max_length=16, blank=True)
    memory_before = models.BigIntegerField(null=True, blank=True)
    memory_evicted = models.BigIntegerField(null=True, blank=True)
    memory_after = models.BigIntegerField(null=True, blank=True)
    answer_matches = models.BooleanField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.model_name} {self.policy}: {self.verdict}"

    @property
    def memories(self) -> tuple[int | None, int | None, int | None]:
        """GPU bytes before, evicted and after (None: no probe could tell)."""
        return (self.memory_before, self.memory_evicted, self.memory_after)
