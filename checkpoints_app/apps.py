"""The checkpoints app: its configuration, and its registration with models_app's image port."""

from django.apps import AppConfig


class CheckpointsAppConfig(AppConfig):
    """Checkpoint images (CRIU dumps and CUDA host copies) and their store."""

    name = "checkpoints_app"
    verbose_name = "Checkpoints"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # models_app reaches the images only through its port: it never imports this app.
        from checkpoints_app.hooks import CheckpointImages
        from models_app import image_port

        image_port.register(CheckpointImages())
