"""What checkpoints_app gives models_app through its port (models_app/image_port.py).

Registered by CheckpointsAppConfig.ready(), so models_app never imports this app: the
worker gets its image store and its sweep hooks, and the operator's actions their image
checks and deletions, from the port.
"""

from __future__ import annotations

from checkpoints_app.services import housekeeping, records
from checkpoints_app.services.operations import has_usable_image
from checkpoints_app.services.store import DbImageStore
from models_app.image_port import DeletedImage, DumpInProgress
from models_app.models import ModelDefinition


class CheckpointImages:
    """`image_port.CheckpointImages` on the image rows and files of this app."""

    def store(self) -> DbImageStore:
        return DbImageStore()

    def recover(self) -> list[int]:
        return housekeeping.recover_images()

    def collect_garbage(self) -> list[int]:
        return housekeeping.collect_garbage()

    def has_usable_image(self, model: ModelDefinition) -> bool:
        return has_usable_image(model)

    def delete(self, image_id: int, *, reason: str) -> DeletedImage:
        return housekeeping.delete_on_request(image_id, reason=reason)

    def dump_in_progress(self) -> DumpInProgress | None:
        return records.dump_in_progress()

    def models_with_ready_images(self) -> set[str]:
        return records.models_with_ready_images()

    def restore_in_progress(self) -> DumpInProgress | None:
        return records.restore_in_progress()
