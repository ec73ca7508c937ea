from django.apps import AppConfig


class ModelsAppConfig(AppConfig):
    """Model registry, engine runtimes, swap history and hosts."""

    name = "models_app"
    verbose_name = "Models"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from models_app import signals

        signals.connect()
