"""Checkpoint images: CRIU dumps on disk and CUDA host copies."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from models_app.models import ModelDefinition, Process, Weights


class ImageKind(models.TextChoices):
    CRIU = "criu", "CRIU process image"
    CUDA_HOST = "cuda_host", "CUDA host copy"


class ImageStatus(models.TextChoices):
    WRITING = "writing", "Writing"
    READY = "ready", "Ready"
    RESTORING = "restoring", "Restoring"
    FAILED = "failed", "Dump failed"
    CORRUPT = "corrupt", "Restore failed"
    DELETED = "deleted", "Deleted"


class CheckpointImage(models.Model):
    """One checkpoint image; a failed restore keeps it, within LLMUX_IMAGES_KEEP_CORRUPT."""

    model = models.ForeignKey(
        ModelDefinition, null=True, blank=True, on_delete=models.SET_NULL, related_name="images"
    )
    model_name = models.CharField(max_length=128)
    kind = models.CharField(max_length=16, choices=ImageKind.choices, default=ImageKind.CRIU)
    status = models.CharField(max_length=16, choices=ImageStatus.choices, default="writing")
    location = models.CharField(max_length=1024, unique=True)
    bytes = models.PositiveBigIntegerField(default=0)
    # The process the image holds: after `criu restore --restore-detached` there is no child
    # handle, so pid and process group come from here.
    pid = models.PositiveIntegerField(null=True, blank=True)
    pgid = models.PositiveIntegerField(null=True, blank=True)
    weights_state = models.CharField(max_length=16, choices=Weights.choices, blank=True)
    process_action = models.CharField(
        max_length=16, choices=Process.choices, default=Process.CHECKPOINT
    )
    # The launch spec the image was made from: it is reused only by the same spec.
    fingerprint = models.CharField(max_length=64, blank=True)
    cuda_mode = models.CharField(max_length=16, blank=True, help_text="none, plugin or suspend")
    expected_bytes = models.PositiveBigIntegerField(default=0, help_text="estimated before")
    # Progress of the dump or restore running now (bytes written or read so far).
    progress_bytes = models.PositiveBigIntegerField(default=0)
    progress_total = models.PositiveBigIntegerField(default=0)
    # The process writing the image ("host:pid:create_time"): a dead writer's image is
    # marked failed by the sweep, never ready.
    writer = models.CharField(max_length=128, blank=True)
    tool_version = models.CharField(max_length=64, blank=True)
    driver_version = models.CharField(max_length=64, blank=True)
    dump_ms = models.FloatField(null=True, blank=True)
    restore_ms = models.FloatField(null=True, blank=True)
    restored_count = models.PositiveIntegerField(default=0)
    # The create time of the engine the last restore brought back (its pid is `pid`): that
    # very engine, evicted again with keep_images, keeps this image instead of a new dump.
    restored_create_time = models.FloatField(null=True, blank=True)
    reused_count = models.PositiveIntegerField(
        default=0, help_text="evictions that kept this image instead of dumping again"
    )
    last_restored_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(
        null=True, blank=True, help_text="a restored engine passed its readiness probe"
    )
    log_path = models.CharField(max_length=1024, blank=True)
    keep = models.BooleanField(default=False, help_text="never garbage-collect this image")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                name="image_ready_has_completion",
                condition=~Q(status=ImageStatus.READY) | Q(completed_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_name} {self.kind} image ({self.status})"
