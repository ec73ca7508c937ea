"""Swap history: one row per switch, append-only once finished."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from .choices import (
    BringUp,
    MemoryCheck,
    OperationKind,
    Process,
    SwapOutcome,
    SwapTrigger,
    Weights,
)
from .definitions import ModelDefinition

# A switch's phases in the order they run, each timed into its `<phase>_ms` column
# (core.switching.Phase). Queue wait (`queue_ms`) comes before them and is not part of
# `total_ms`, the switch's own time: the cost model and the metrics read that.
PHASES = ("backoff", "check", "cooldown", "drain", "evict", "bringup", "readiness", "settle")


class SwapEvent(models.Model):
    """A switch from one model to another on a GPU group, with what each phase cost."""

    gpu_group = models.CharField(max_length=64)
    from_model = models.ForeignKey(
        ModelDefinition, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    to_model = models.ForeignKey(
        ModelDefinition, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Names are kept too: history must stay readable after a model is deleted.
    from_name = models.CharField(max_length=128, blank=True)
    to_name = models.CharField(max_length=128, blank=True, help_text="blank for an eviction")
    trigger = models.CharField(max_length=16, choices=SwapTrigger.choices)
    actor = models.CharField(max_length=150, blank=True)
    operation = models.CharField(
        max_length=8, choices=OperationKind.choices, default=OperationKind.SWITCH
    )
    outcome = models.CharField(
        max_length=16, choices=SwapOutcome.choices, default=SwapOutcome.IN_PROGRESS
    )
    phase = models.CharField(max_length=16, blank=True, help_text="current phase while running")
    phase_started_at = models.DateTimeField(
        null=True, blank=True, help_text="when the current phase began (live progress)"
    )
    eviction_weights = models.CharField(max_length=16, choices=Weights.choices, blank=True)
    eviction_process = models.CharField(max_length=16, choices=Process.choices, blank=True)
    escalated = models.BooleanField(default=False, help_text="eviction escalated to stop")
    memory_check = models.CharField(
        max_length=16,
        choices=MemoryCheck.choices,
        blank=True,
        help_text="how the eviction was seen to free GPU memory",
    )
    bringup = models.CharField(max_length=16, choices=BringUp.choices, blank=True)
    queue_ms = models.FloatField(
        null=True, blank=True, help_text="from the request being queued to the switch starting"
    )
    backoff_ms = models.FloatField(null=True, blank=True)
    check_ms = models.FloatField(null=True, blank=True)
    cooldown_ms = models.FloatField(null=True, blank=True)
    drain_ms = models.FloatField(null=True, blank=True)
    evict_ms = models.FloatField(null=True, blank=True)
    bringup_ms = models.FloatField(null=True, blank=True)
    readiness_ms = models.FloatField(null=True, blank=True)
    settle_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(
        null=True, blank=True, help_text="the switch's own time: every phase, not the queue"
    )
    gpu_memory_before = models.JSONField(default=dict, blank=True)
    gpu_memory_after = models.JSONField(default=dict, blank=True)
    waiting_requests = models.PositiveIntegerField(default=0)
    forced_drain = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["to_model", "-started_at"]),
            models.Index(fields=["outcome", "-started_at"]),
            # Who held a GPU group when a window of the charts begins (dashboard.charts).
            models.Index(fields=["gpu_group", "-started_at"], name="swap_group_started"),
        ]
        constraints = [
            models.CheckConstraint(
                name="swap_finished_iff_not_in_progress",
                condition=(Q(outcome=SwapOutcome.IN_PROGRESS) & Q(finished_at__isnull=True))
                | (~Q(outcome=SwapOutcome.IN_PROGRESS) & Q(finished_at__isnull=False)),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.from_name or '-'} -> {self.to_name} ({self.outcome})"
