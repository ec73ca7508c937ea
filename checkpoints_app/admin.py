"""Django admin for checkpoint images (read-only: images change through services)."""

from __future__ import annotations

from django.contrib import admin

from models_app.admin import ReadOnlyAdmin

from .models import CheckpointImage


@admin.register(CheckpointImage)
class CheckpointImageAdmin(ReadOnlyAdmin):
    list_display = ("model_name", "kind", "status", "bytes", "restored_count", "created_at", "keep")
    list_filter = ("kind", "status", "keep")
    search_fields = ("model_name", "location")
