from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """Pages, actions and the live status websocket for operators."""

    name = "dashboard"
    verbose_name = "Dashboard"
    default_auto_field = "django.db.models.BigAutoField"
