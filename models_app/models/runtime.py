"""Live engine state. Written only by services; read by everything else."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from .choices import EngineState, Process, Weights
from .definitions import ModelDefinition, Node


class EngineRuntime(models.Model):
    """What one model's engine is doing right now, and which process it is."""

    model = models.OneToOneField(
        ModelDefinition, primary_key=True, related_name="runtime", on_delete=models.CASCADE
    )
    state = models.CharField(
        max_length=16, choices=EngineState.choices, default=EngineState.NOT_STARTED
    )
    # Identity of the engine process: a pid alone can be reused by an unrelated process.
    pid = models.PositiveIntegerField(null=True, blank=True)
    create_time = models.FloatField(null=True, blank=True)
    pgid = models.PositiveIntegerField(null=True, blank=True)
    node = models.ForeignKey(Node, null=True, blank=True, on_delete=models.SET_NULL)
    # How the engine was evicted, so bring-up knows whether to wake, reload, resume or restore.
    evicted_weights = models.CharField(max_length=16, choices=Weights.choices, blank=True)
    evicted_process = models.CharField(max_length=16, choices=Process.choices, blank=True)
    gpu_group = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    state_changed_at = models.DateTimeField(auto_now_add=True)
    in_flight = models.PositiveIntegerField(default=0)
    queued = models.PositiveIntegerField(default=0)
    last_health_at = models.DateTimeField(null=True, blank=True)
    last_health_ok = models.BooleanField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    # Raised (incremented) by the worker when a drain starts; web processes acknowledge it
    # once their in-flight count for this model is zero.
    drain_token = models.PositiveIntegerField(default=0)
    # Operator's runtime eviction override (llmux's /control); the definition stays as is.
    override_weights = models.CharField(max_length=16, choices=Weights.choices, blank=True)
    override_process = models.CharField(max_length=16, choices=Process.choices, blank=True)
    # Compare-and-swap guard: every writer filters on the version it read and bumps it.
    version = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["model__name"]
        constraints = [
            models.CheckConstraint(
                name="runtime_live_states_have_identity",
                condition=~Q(state__in=sorted(EngineState.with_process()))
                | (Q(pid__isnull=False) & Q(create_time__isnull=False)),
            ),
            models.CheckConstraint(
                name="runtime_state_valid",
                condition=Q(state__in=[s.value for s in EngineState]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model.name}: {self.state}"
