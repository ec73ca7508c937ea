"""Django admin: the registry is editable; runtime and history are read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from .models import (
    ApiToken,
    EngineRuntime,
    ModelAlias,
    ModelDefinition,
    Node,
    RegistryConfig,
    SwapEvent,
)
from .services import api_tokens


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """History and live state are written by services only; the admin just shows them."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ModelAliasInline(admin.TabularInline):  # type: ignore[type-arg]
    model = ModelAlias
    extra = 0


@admin.register(ModelDefinition)
class ModelDefinitionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "engine_kind", "model_path", "port", "uds_path", "enabled")
    list_filter = ("engine_kind", "enabled")
    search_fields = ("name", "model_path", "aliases__name")
    inlines = [ModelAliasInline]


@admin.register(RegistryConfig)
class RegistryConfigAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("__str__", "policy_type", "mode", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not RegistryConfig.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(EngineRuntime)
class EngineRuntimeAdmin(ReadOnlyAdmin):
    list_display = ("model", "state", "pid", "in_flight", "activated_at", "last_error")
    list_filter = ("state",)


@admin.register(SwapEvent)
class SwapEventAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at",
        "from_name",
        "to_name",
        "trigger",
        "outcome",
        "total_ms",
        "escalated",
    )
    list_filter = ("outcome", "trigger", "gpu_group")
    search_fields = ("from_name", "to_name", "actor")
    date_hierarchy = "started_at"


@admin.register(Node)
class NodeAdmin(ReadOnlyAdmin):
    list_display = ("name", "cluster", "heartbeat_at")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Management API tokens: made here (shown once) or deleted, never edited or shown
    again; only their hash is stored."""

    list_display = ("user", "name", "prefix", "created_at")
    list_filter = ("user",)
    fields = ("user", "name")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:  # type: ignore[type-arg]
        made = api_tokens.create_token(obj.user, name=obj.name)
        obj.pk = made.token.pk
        obj.refresh_from_db()
        obj.plaintext = made.plaintext  # for response_add, this request only

    def response_add(
        self, request: HttpRequest, obj: Any, post_url_continue: str | None = None
    ) -> HttpResponse:
        """The new token on a page of its own, this once (never in a message, which
        would keep it in a cookie or the session table)."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "New API token",
            "token": obj,
            "plaintext": obj.plaintext,
        }
        return TemplateResponse(request, "admin/models_app/apitoken/created.html", context)
