"""Coordination between web processes and workers: switch queue, group leases, web presence."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from .choices import OperationKind, Process, SwapTrigger, Weights
from .definitions import ModelDefinition
from .swaps import SwapEvent


class SwitchStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


OPEN_SWITCH_STATUSES = (SwitchStatus.PENDING, SwitchStatus.RUNNING)


class SwitchRequest(models.Model):
    """A queued lifecycle operation on a GPU group (make `target` active, or evict it).

    At most one is open per target; operations of a group run one at a time under its lease.
    """

    group = models.CharField(max_length=64, db_index=True)
    target = models.ForeignKey(ModelDefinition, on_delete=models.CASCADE, related_name="+")
    trigger = models.CharField(max_length=16, choices=SwapTrigger.choices)
    actor = models.CharField(max_length=150, blank=True)
    force = models.BooleanField(default=False)
    kind = models.CharField(
        max_length=8, choices=OperationKind.choices, default=OperationKind.SWITCH
    )
    # For evictions: the policy to use instead of the model's own (blank = the model's).
    weights = models.CharField(max_length=16, choices=Weights.choices, blank=True)
    process = models.CharField(max_length=16, choices=Process.choices, blank=True)
    status = models.CharField(
        max_length=16, choices=SwitchStatus.choices, default=SwitchStatus.PENDING
    )
    error = models.TextField(blank=True)
    swap = models.ForeignKey(
        SwapEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A pin's switch: the mode and pinned model before the pin, put back if it fails
    # (llmux's rule; blank: not a pin's switch).
    undo_mode = models.CharField(max_length=8, blank=True)
    undo_pinned = models.ForeignKey(
        ModelDefinition, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # "Never two switches for the same target": the database refuses a second open one.
            models.UniqueConstraint(
                fields=["target"],
                condition=Q(status__in=["pending", "running"]),
                name="one_open_switch_per_target",
            ),
        ]

    def __str__(self) -> str:
        return f"switch to {self.target_id} ({self.status})"


class GroupLease(models.Model):
    """One switch at a time per GPU group: whoever holds an unexpired lease may switch."""

    group = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=200, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    acquired_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"lease {self.group} held by {self.holder or 'nobody'}"


class WebInstance(models.Model):
    """A live web process: its waiting demand and drain acknowledgements, one row each.

    Each web process writes only its own row (no contention between them); workers read
    them all. Rows whose heartbeat is stale belong to dead processes and are ignored.
    """

    id = models.CharField(max_length=64, primary_key=True)
    host = models.CharField(max_length=253)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(db_index=True)
    # {model name: [waiting count, oldest wait start (unix seconds)]}
    waiting = models.JSONField(default=dict, blank=True)
    # {model name: drain token acknowledged with zero in-flight requests}
    drained = models.JSONField(default=dict, blank=True)
    # {model name: requests in flight}, as of the last heartbeat (coarse, for scheduling)
    in_flight = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"web {self.host}:{self.pid}"
