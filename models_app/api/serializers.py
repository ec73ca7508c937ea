"""Request and response shapes of the management API (they make the OpenAPI schema)."""

from __future__ import annotations

from rest_framework import serializers

from llmux_site.core.eviction_policy import ProcessAction, WeightsAction
from models_app.models import (
    ApiKey,
    AuditEntry,
    Node,
    SwapEvent,
    SwapOutcome,
    SwapTrigger,
    SwitchRequest,
    ValidationRun,
)

WEIGHTS = [w.value for w in WeightsAction]
PROCESSES = [p.value for p in ProcessAction]
INT_COLUMN_MAX = 2**31 - 1  # a PositiveIntegerField on PostgreSQL holds no more


class StrictCharField(serializers.CharField):
    """A string, and only a string (DRF's CharField would turn 0 or true into one)."""

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Refuses fields it does not know (a typo is an error, not silently ignored)."""

    def validate(self, attrs: dict[str, object]) -> dict[str, object]:
        unknown = (
            set(self.initial_data) - set(self.fields) if hasattr(self, "initial_data") else set()
        )
        if unknown:
            raise serializers.ValidationError({k: "unknown field" for k in sorted(unknown)})
        return attrs


class ModelEntrySerializer(StrictSerializer):
    name = StrictCharField(max_length=128)
    definition = serializers.DictField(
        help_text="the model's entry as in an llmux config file (validated like an import)"
    )


class ModelOutSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField()
    definition = serializers.DictField()
    state = serializers.CharField()


class ModelPatchSerializer(StrictSerializer):
    definition = serializers.DictField(help_text="keys to change; the rest stays")


class EvictSerializer(StrictSerializer):
    weights = serializers.ChoiceField(choices=WEIGHTS)
    process = serializers.ChoiceField(choices=PROCESSES)


class CheckpointSerializer(StrictSerializer):
    weights = serializers.ChoiceField(choices=WEIGHTS, required=False)


class OverrideSerializer(StrictSerializer):
    weights = serializers.ChoiceField(choices=WEIGHTS, required=False, allow_null=True)
    process = serializers.ChoiceField(
        choices=PROCESSES,
        required=False,
        allow_null=True,
    )


class ModeSerializer(StrictSerializer):
    mode = serializers.ChoiceField(choices=["auto", "manual"])


class AcceptedSerializer(serializers.Serializer):  # type: ignore[type-arg]
    message = serializers.CharField()
    operation = serializers.IntegerField(allow_null=True)
    url = serializers.CharField(allow_null=True)


class MessageSerializer(serializers.Serializer):  # type: ignore[type-arg]
    message = serializers.CharField()


class OperationSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    model = serializers.CharField(source="target.name")

    class Meta:
        model = SwitchRequest
        fields = [
            "id",
            "group",
            "model",
            "kind",
            "trigger",
            "actor",
            "status",
            "error",
            "swap",
            "created_at",
            "finished_at",
        ]


class SwapSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = SwapEvent
        exclude = ["from_model", "to_model"]


class AuditSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = AuditEntry
        exclude = ["actor"]


class NodeSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = Node
        fields = ["name", "cluster", "gpus", "info", "heartbeat_at"]


class ModelStatusSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField()
    state = serializers.CharField()
    eviction = serializers.CharField()
    in_flight = serializers.IntegerField()
    queued = serializers.IntegerField()
    pid = serializers.IntegerField(allow_null=True)
    gpu_memory = serializers.IntegerField(allow_null=True)
    uptime_s = serializers.FloatField(allow_null=True)
    last_switch = serializers.CharField(allow_null=True)
    last_switch_ms = serializers.FloatField(allow_null=True)
    gpu_ids = serializers.ListField(child=serializers.IntegerField())
    state_label = serializers.CharField()
    error = serializers.CharField(allow_blank=True)


class StatusSerializer(serializers.Serializer):  # type: ignore[type-arg]
    at = serializers.CharField()
    mode = serializers.CharField()
    pinned = serializers.CharField(allow_null=True)
    active = serializers.ListField(child=serializers.CharField())
    models = ModelStatusSerializer(many=True)
    switch = serializers.DictField(allow_null=True)
    last_swap = serializers.IntegerField(allow_null=True, help_text="the newest swap's id")
    gpus = serializers.ListField(child=serializers.DictField())
    checkpoint = serializers.DictField(allow_null=True)
    rates = serializers.DictField(
        child=serializers.DictField(child=serializers.FloatField()),
        help_text="per model: requests_per_s and tokens_per_s over the last minute",
    )
    telemetry = serializers.DictField(
        help_text="GPU telemetry: probe, history_s, history_every_s; gpus (id, name, used, "
        "total, utilization, temperature, power, power_limit, models, other, history); "
        "sleeping (model, state, state_label, host_bytes)"
    )


class KeyCreateSerializer(StrictSerializer):
    name = StrictCharField(max_length=128)
    scopes = serializers.ListField(
        child=StrictCharField(max_length=128),
        required=False,
        default=list,
        help_text="model names or aliases this key may use; empty: every model",
    )
    rpm_limit = serializers.IntegerField(
        min_value=1, max_value=INT_COLUMN_MAX, required=False, allow_null=True
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class KeySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = ApiKey
        exclude = ["secret_hash", "created_by"]


class KeyCreatedSerializer(KeySerializer):
    key = serializers.CharField(help_text="the whole key: shown this once, never again")

    class Meta(KeySerializer.Meta):
        exclude = ["secret_hash", "created_by"]


class SwapFilterSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """The swap history's query filters (blank: any); a value outside them is a 400."""

    model = serializers.CharField(max_length=128, required=False, allow_blank=True)
    outcome = serializers.ChoiceField(choices=SwapOutcome.values, required=False, allow_blank=True)
    trigger = serializers.ChoiceField(choices=SwapTrigger.values, required=False, allow_blank=True)


class ValidationFilterSerializer(serializers.Serializer):  # type: ignore[type-arg]
    model = serializers.CharField(max_length=128, required=False, allow_blank=True)


class ValidationSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = ValidationRun
        exclude = ["model"]
