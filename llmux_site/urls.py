"""URL routes of the web process."""

from django.contrib import admin
from django.urls import path

from models_app import views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("admin/", admin.site.urls),
]
