"""URL routes of the web process."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from dashboard.login import ThrottledAdminLoginForm, ThrottledLoginForm
from models_app.api import views as api_views

admin.site.login_form = ThrottledAdminLoginForm

urlpatterns = [
    path("", include("dashboard.urls")),
    path(
        "login/",
        auth_views.LoginView.as_view(authentication_form=ThrottledLoginForm),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("metrics", api_views.metrics_view, name="metrics"),
    path("api/", include("models_app.api.urls")),  # last: it ends with a JSON 404
]
