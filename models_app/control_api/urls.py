"""llmux's control routes, under /control/ (llmux_site.urls)."""

from __future__ import annotations

from django.urls import path

from models_app.control_api import views

urlpatterns = [
    path("status", views.status),
    path("mode", views.mode),
    path("pin", views.pin),
    path("unpin", views.unpin),
    path("switch", views.switch),
    path("sleep", views.sleep),
    path("wake", views.wake),
    path("sleep-levels", views.sleep_levels),
    path("sleep-level", views.sleep_level),
    path("eviction", views.eviction),
]
