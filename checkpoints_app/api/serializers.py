"""Response shapes of the checkpoint images' endpoints (they make the OpenAPI schema)."""

from __future__ import annotations

from rest_framework import serializers

from checkpoints_app.models import CheckpointImage


class ImageSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = CheckpointImage
        exclude = ["model"]
