from django.apps import AppConfig


class CheckpointsAppConfig(AppConfig):
    """Checkpoint images (CRIU dumps and CUDA host copies) and their store."""

    name = "checkpoints_app"
    verbose_name = "Checkpoints"
    default_auto_field = "django.db.models.BigAutoField"
