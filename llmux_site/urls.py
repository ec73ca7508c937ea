"""URL routes of the web process."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from dashboard.login import ThrottledAdminLoginForm, ThrottledLoginForm
from llmux_site.middleware import allow_inline_styles
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
    # Pages without an icon link (the admin's) make browsers ask for this one.
    path("favicon.ico", RedirectView.as_view(url=static("llmux/favicon.svg"), permanent=True)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Split: its script is a file of its own, as the Content-Security-Policy requires.
    path(
        "api/docs/",
        allow_inline_styles(SpectacularSwaggerSplitView.as_view(url_name="schema")),
        name="api-docs",
    ),
    path("metrics", api_views.metrics_view, name="metrics"),
    # llmux's control API, with its own JSON (docs/API.md, "llmux's control routes").
    path("control/", include("models_app.control_api.urls")),
    path("api/", include("checkpoints_app.api.urls")),
    path("api/", include("models_app.api.urls")),  # last: it ends with a JSON 404
]
