"""Dashboard pages (server-rendered; the live dashboard builds on these)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from models_app.models import EngineState, RegistryConfig
from models_app.selectors import registry_rows


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    """Every model with its address, eviction policy and state."""
    config = RegistryConfig.load()
    return render(
        request,
        "llmux/overview.html",
        {"config": config, "rows": registry_rows(config), "states": EngineState},
    )
