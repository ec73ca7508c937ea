"""Dashboard routes."""

from django.urls import path

from dashboard import activity, views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("models/<path:name>/log/", views.engine_log, name="engine-log"),
    path("models/<path:name>/", views.model_detail, name="model-detail"),
    path("swaps/", views.swaps, name="swaps"),
    path("swaps/rows/", views.swaps_rows, name="swaps-rows"),
    path("checkpoints/", views.checkpoints, name="checkpoints"),
    path("audit/", views.audit_log, name="audit"),
    path("charts/", views.charts, name="charts"),
    path("charts/data/", views.charts_data, name="charts-data"),
    path("playground/", views.playground, name="playground"),
    path("playground/key/", views.playground_key, name="playground-key"),
    path("keys/", views.keys, name="keys"),
    path("actions/<str:name>/", views.act, name="act"),
    path("requests/", activity.requests_page, name="requests"),
    path("requests/data/", activity.requests_data, name="requests-data"),
    path("requests/cancel/", activity.cancel_request, name="requests-cancel"),
    path("requests/capture/", activity.capture, name="requests-capture"),
]
