"""The model registry: what can be served, and the registry-wide llmux settings."""

from __future__ import annotations

from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from llmux_site.core.config import MODEL_NAME_PATTERN
from llmux_site.core.eviction_policy import EvictionPolicy, ProcessAction, WeightsAction

from .choices import EngineKind, Mode, PolicyType, Process, Weights

# Model names follow the shapes clients already use (`Qwen/Qwen2.5-7B`, `llama3:8b`).
MODEL_NAME_RE = MODEL_NAME_PATTERN
model_name_validator = RegexValidator(
    MODEL_NAME_RE, "1-128 characters: letters, digits and . _ : / @ + - (not first)"
)
port_validators = [MinValueValidator(1), MaxValueValidator(65535)]


class Node(models.Model):
    """A GPU host running a worker cluster; single-host installs have exactly one."""

    name = models.CharField(max_length=253, unique=True)
    cluster = models.CharField(max_length=100, help_text="django-q2 cluster name on this host")
    gpus = models.JSONField(default=list, blank=True, help_text="GPU inventory last reported")
    info = models.JSONField(default=dict, blank=True, help_text="driver and tool versions")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ModelDefinition(models.Model):
    """One servable model: how to start its engine and how it gives its GPU back."""

    name = models.CharField(max_length=128, unique=True, validators=[model_name_validator])
    description = models.CharField(max_length=500, blank=True)
    engine_kind = models.CharField(
        max_length=16, choices=EngineKind.choices, default=EngineKind.VLLM
    )
    model_path = models.CharField(max_length=1024)
    # The name the engine itself serves; blank means model_path (vLLM's default).
    served_model_name = models.CharField(max_length=256, blank=True)
    # The readiness probe after /health: a name (completion, chat, embedding, health) or,
    # for a generic engine, {"path": ..., "body": ...}; null picks one by the engine.
    probe = models.JSONField(null=True, blank=True, default=None)
    rewrite_model = models.BooleanField(
        default=True, help_text="replace the request's model with the engine's served name"
    )
    host = models.CharField(max_length=64, default="127.0.0.1")
    port = models.PositiveIntegerField(null=True, blank=True, validators=port_validators)
    uds_path = models.CharField(max_length=107, blank=True)
    extra_args = models.JSONField(default=list, blank=True)
    env = models.JSONField(default=dict, blank=True)
    command = models.JSONField(
        default=list, blank=True, help_text="argv template for generic engines, or a vllm override"
    )
    gpu_ids = models.JSONField(default=list, blank=True)
    eviction_weights = models.CharField(max_length=16, choices=Weights.choices, blank=True)
    eviction_process = models.CharField(max_length=16, choices=Process.choices, blank=True)
    # Null: the registry's startup_timeout_secs (llmux's top-level key; 1800 by default).
    startup_timeout_secs = models.PositiveIntegerField(null=True, blank=True, default=None)
    drain_timeout_secs = models.PositiveIntegerField(default=30)
    checkpoint_path = models.CharField(max_length=1024, blank=True)
    warmup = models.BooleanField(null=True, blank=True)
    priority = models.IntegerField(default=0)
    enabled = models.BooleanField(default=True)
    # Keys of the model's config entry this llmux does not know, kept for export.
    unknown_keys = models.JSONField(default=dict, blank=True)
    node = models.ForeignKey(Node, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                name="model_listens_on_port_xor_socket",
                condition=(Q(port__isnull=False) & Q(uds_path=""))
                | (Q(port__isnull=True) & ~Q(uds_path="")),
            ),
            models.CheckConstraint(
                name="model_eviction_both_or_neither",
                condition=(Q(eviction_weights="") & Q(eviction_process=""))
                | (~Q(eviction_weights="") & ~Q(eviction_process="")),
            ),
            models.UniqueConstraint(
                fields=["node", "port"],
                condition=Q(port__isnull=False),
                name="model_port_unique_per_node",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def eviction_override(self) -> EvictionPolicy | None:
        """This model's own eviction policy, if it sets one (else the registry default)."""
        if not self.eviction_weights:
            return None
        return EvictionPolicy(
            WeightsAction(self.eviction_weights), ProcessAction(self.eviction_process)
        )


class ModelAlias(models.Model):
    """Another name clients may use for a model."""

    model = models.ForeignKey(ModelDefinition, related_name="aliases", on_delete=models.CASCADE)
    name = models.CharField(max_length=128, unique=True, validators=[model_name_validator])

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return self.name


class RegistryConfig(models.Model):
    """Registry-wide settings from the llmux config file (one row, pk=1)."""

    SINGLETON_PK = 1

    port = models.PositiveIntegerField(null=True, blank=True, validators=port_validators)
    # 0: llmux's "metrics disabled", kept so that an export means the same to llmux.
    metrics_port = models.PositiveIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(65535)]
    )
    admin_port = models.PositiveIntegerField(null=True, blank=True, validators=port_validators)
    vllm_command = models.CharField(max_length=1024, default="vllm")
    warmup = models.BooleanField(default=False)
    # The cold-start limit of models that set none of their own (llmux's top-level key).
    startup_timeout_secs = models.PositiveIntegerField(
        default=1800, validators=[MinValueValidator(1)]
    )
    # policy section (defaults are llmux 0.5's, so its files behave the same here)
    policy_type = models.CharField(max_length=16, choices=PolicyType.choices, default="fifo")
    request_timeout_secs = models.PositiveIntegerField(default=300)
    drain_before_switch = models.BooleanField(default=True)
    default_weights = models.CharField(max_length=16, choices=Weights.choices, default="retain")
    default_process = models.CharField(max_length=16, choices=Process.choices, default="stop")
    min_active_secs = models.PositiveIntegerField(default=5)
    coalesce_window_ms = models.PositiveIntegerField(default=2000)
    amortization_factor = models.FloatField(default=0.5)
    max_wait_secs = models.PositiveIntegerField(default=15)
    tick_interval_ms = models.PositiveIntegerField(default=500)
    min_quantum_ms = models.PositiveIntegerField(default=2000)
    # checkpoint section
    criu_path = models.CharField(max_length=1024, default="criu")
    cuda_plugin_dir = models.CharField(max_length=1024, blank=True)
    images_dir = models.CharField(max_length=1024, blank=True)
    cuda_checkpoint_path = models.CharField(max_length=1024, blank=True)
    keep_images = models.BooleanField(default=True)
    # The imported file wrote a policy that a sleep_level names as an `eviction` object:
    # an export does the same, as llmux 0.6 and later ignore `sleep_level` (config_compat).
    eviction_objects = models.BooleanField(default=False)
    # Keys of the file this llmux does not know (top level; `policy` and `checkpoint` ones
    # under those names), kept for export.
    unknown_keys = models.JSONField(default=dict, blank=True)
    # runtime control (llmux 0.5's /control): survives restarts because it lives here
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.AUTO)
    pinned_model = models.ForeignKey(
        ModelDefinition, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "registry settings"
        verbose_name_plural = "registry settings"
        constraints = [
            models.CheckConstraint(name="registry_config_singleton", condition=Q(pk=1)),
        ]

    def __str__(self) -> str:
        return "llmux registry settings"

    @classmethod
    def load(cls) -> RegistryConfig:
        try:  # one query in the usual case, where the row exists
            return cls.objects.get(pk=cls.SINGLETON_PK)
        except cls.DoesNotExist:
            obj, _ = cls.objects.get_or_create(pk=cls.SINGLETON_PK)
            return obj

    @classmethod
    def current(cls) -> RegistryConfig:
        """The settings for reading: the stored row, or the defaults unsaved (a read path
        never inserts; `load()` creates the row for the writers that need it)."""
        stored = cls.objects.filter(pk=cls.SINGLETON_PK).first()
        return stored if stored is not None else cls(pk=cls.SINGLETON_PK)

    def default_eviction(self) -> EvictionPolicy:
        return EvictionPolicy(
            WeightsAction(self.default_weights), ProcessAction(self.default_process)
        )

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.attname) for f in self._meta.concrete_fields}
