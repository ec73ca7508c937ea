"""Routes of the management API."""

from django.urls import path, re_path

from models_app.api import views

urlpatterns = [
    path("status/", views.Status.as_view(), name="api-status"),
    path("models/", views.ModelList.as_view(), name="api-models"),
    path(
        "models/<path:name>/actions/<str:action>/",
        views.ModelAction.as_view(),
        name="api-model-action",
    ),
    path("models/<path:name>/override/", views.Override.as_view(), name="api-model-override"),
    path("models/<path:name>/", views.ModelDetail.as_view(), name="api-model"),
    path("mode/", views.Mode.as_view(), name="api-mode"),
    path("unpin/", views.Unpin.as_view(), name="api-unpin"),
    path("operations/<int:pk>/", views.OperationDetail.as_view(), name="api-operation"),
    path("swaps/", views.SwapList.as_view(), name="api-swaps"),
    path("nodes/", views.NodeList.as_view(), name="api-nodes"),
    path("validations/", views.ValidationList.as_view(), name="api-validations"),
    path("audit/", views.AuditList.as_view(), name="api-audit"),
    path("keys/", views.KeyList.as_view(), name="api-keys"),
    path("keys/<int:pk>/", views.KeyDetail.as_view(), name="api-key"),
    # (/api/images/: checkpoints_app.api.urls, included before these.)
    # Anything else under /api/ is a JSON 404, never the site's HTML page.
    re_path(r"^[\s\S]*$", views.not_found),  # [\s\S]: a name with a newline too
]
