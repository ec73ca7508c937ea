"""Routes of the checkpoint images' endpoints, under `/api/` before models_app.api's
(whose last route answers anything else with a JSON 404)."""

from django.urls import path

from checkpoints_app.api import views

urlpatterns = [
    path("images/", views.ImageList.as_view(), name="api-images"),
    path("images/<int:pk>/", views.ImageDetail.as_view(), name="api-image"),
    path("images/<int:pk>/restore/", views.ImageRestore.as_view(), name="api-image-restore"),
]
