"""The port through which models_app reaches checkpoint images, without importing them.

`checkpoints_app` depends on `models_app`, never the reverse: its AppConfig.ready()
registers its implementation here (checkpoints_app/hooks.py), and the worker's process
actions, its sweep and start, and the operator's image actions call it through these
functions. Without it registered (checkpoints_app not installed) there is no image store:
CRIU evictions escalate to stop, the image hooks do nothing, and no model has an image.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from llmux_site.core.process_actions import ImageStore
from models_app.models import ModelDefinition


class ImageNotFound(LookupError):
    """No image has that id."""


class ImageBusy(Exception):
    """The image is being written or restored, or is deleted already: it stays."""


class DeletedImage(NamedTuple):
    """An image an operator deleted (its row stays as history)."""

    pk: int
    model_name: str


class DumpInProgress(NamedTuple):
    """The newest image being written now, and how far its dump got (bytes)."""

    model_name: str
    done: int
    total: int


class CheckpointImages(Protocol):
    """What models_app asks of the checkpoint images (checkpoints_app implements it)."""

    def store(self) -> ImageStore:
        """A worker's image store (the process actions dump to and restore from it)."""

    def recover(self) -> list[int]:
        """Settle images whose writer died; the ids of those marked failed."""

    def collect_garbage(self) -> list[int]:
        """Delete images nothing depends on any more; their ids."""

    def has_usable_image(self, model: ModelDefinition) -> bool:
        """Whether a bring-up of `model` would restore an image."""

    def delete(self, image_id: int, *, reason: str) -> DeletedImage:
        """An operator's deletion; raises ImageNotFound or ImageBusy."""

    def dump_in_progress(self) -> DumpInProgress | None:
        """The newest image being written, for the status snapshot."""

    def models_with_ready_images(self) -> set[str]:
        """The names of the models with a ready image (usable or not): one query."""

    def restore_in_progress(self) -> DumpInProgress | None:
        """The newest image being restored (bytes read of its total), for the snapshot."""


_registered: CheckpointImages | None = None


def register(images: CheckpointImages) -> None:
    """Called once per process, by checkpoints_app's AppConfig.ready()."""
    global _registered
    _registered = images


def store() -> ImageStore | None:
    return _registered.store() if _registered is not None else None


def recover() -> list[int]:
    return _registered.recover() if _registered is not None else []


def collect_garbage() -> list[int]:
    return _registered.collect_garbage() if _registered is not None else []


def has_usable_image(model: ModelDefinition) -> bool:
    return _registered is not None and _registered.has_usable_image(model)


def delete(image_id: int, *, reason: str) -> DeletedImage:
    if _registered is None:
        raise ImageNotFound(f"no image {image_id}: checkpoint images are not installed")
    return _registered.delete(image_id, reason=reason)


def dump_in_progress() -> DumpInProgress | None:
    return _registered.dump_in_progress() if _registered is not None else None


def restore_in_progress() -> DumpInProgress | None:
    return _registered.restore_in_progress() if _registered is not None else None


def restorable(models: list[ModelDefinition]) -> set[str]:
    """The names of `models` whose bring-up would restore an image (a usable one is
    looked for only among those with a ready image)."""
    if _registered is None:
        return set()
    ready = _registered.models_with_ready_images()
    return {m.name for m in models if m.name in ready and _registered.has_usable_image(m)}
