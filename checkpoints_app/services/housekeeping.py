"""Images that are no longer needed, and images whose writer died.

An image is deleted only when something newer or nothing at all depends on it: after a
verified restore (with `keep_images` off), when a newer image of the same model is ready
and this one was restored and verified, or when its model was deleted. Never because a
restore failed (that image is kept for inspection), and never an image marked `keep` or
named by a model's checkpoint_path. Images whose restore failed are kept within a budget:
the newest LLMUX_IMAGES_KEEP_CORRUPT of each model, older ones deleted (`prune_corrupt`).
Each deletion is a compare-and-set from the status it was chosen in, so an image whose
restore began meanwhile keeps its files.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from checkpoints_app.models import CheckpointImage, ImageKind, ImageStatus
from checkpoints_app.services.records import announce, lost, remove_files, transition, writer_alive
from llmux_site.core.images import is_image
from llmux_site.logs import event
from models_app.image_port import DeletedImage, ImageBusy, ImageNotFound

log = logging.getLogger(__name__)

# An operator may not delete an image while it is written or restored, nor delete it twice.
BUSY = (ImageStatus.WRITING, ImageStatus.RESTORING, ImageStatus.DELETED)


def delete_image(image: CheckpointImage, *, reason: str) -> bool:
    """Mark the row deleted (it stays as history), then remove the image's files; whether
    it was deleted. It is not when its row left the status it was read in (a restore began,
    or another deletion won): then nothing is touched."""
    # The row keeps why its files went, before what went wrong with it (a restore's error).
    error = f"deleted: {reason}\n{image.error}"[:8000] if image.error else reason
    expected = ImageStatus(image.status)
    if not transition(image, expected, ImageStatus.DELETED, error=error):
        lost(image, "a deletion", expected, level=logging.INFO)
        return False
    remove_files(image)
    announce(image)
    event(
        log,
        "image_deleted",
        f"image {image.pk} of {image.model_name} deleted: {reason}",
        model=image.model_name,
        image=image.pk,
        reason=reason,
    )
    return True


def delete_on_request(image_id: int, *, reason: str) -> DeletedImage:
    """An operator's deletion of one image: refused (ImageBusy) while it is written or
    restored, or once it is deleted, also when that began while the operator asked."""
    image = CheckpointImage.objects.filter(pk=image_id).first()
    if image is None:
        raise ImageNotFound("no such image")
    if image.status not in BUSY and delete_image(image, reason=reason):
        return DeletedImage(image.pk, image.model_name)
    image.refresh_from_db(fields=["status"])
    raise ImageBusy(f"image {image.pk} is {image.status}: nothing to delete now")


def drop_superseded(newest: CheckpointImage) -> list[int]:
    """Older images of `newest`'s model that were restored and verified: they hold a state
    the newer image replaces."""
    older = CheckpointImage.objects.filter(
        model_name=newest.model_name,
        status=ImageStatus.READY,
        verified_at__isnull=False,
        keep=False,
        created_at__lte=newest.created_at,
    ).exclude(pk=newest.pk)
    return [
        image.pk
        for image in older
        if delete_image(image, reason=f"superseded by image {newest.pk}")
    ]


def prune_corrupt(model_name: str | None = None) -> list[int]:
    """Delete the files of corrupt images beyond the newest LLMUX_IMAGES_KEEP_CORRUPT of
    each model (of `model_name` only, when given); the rows stay, with the reason."""
    keep = settings.LLMUX_IMAGES_KEEP_CORRUPT
    corrupt = CheckpointImage.objects.filter(status=ImageStatus.CORRUPT, keep=False)
    if model_name is not None:
        corrupt = corrupt.filter(model_name=model_name)
    kept: dict[str, int] = {}
    deleted = []
    for image in corrupt.order_by("model_name", "-created_at", "-id"):
        kept[image.model_name] = kept.get(image.model_name, 0) + 1
        if kept[image.model_name] <= keep:
            continue
        if delete_image(
            image,
            reason=f"only the newest {keep} corrupt images of a model are kept "
            "(LLMUX_IMAGES_KEEP_CORRUPT)",
        ):
            deleted.append(image.pk)
    return deleted


def collect_garbage() -> list[int]:
    """Delete what nothing depends on: images of deleted models, superseded images, and
    corrupt images beyond the budget."""
    deleted = []
    orphans = CheckpointImage.objects.filter(
        model__isnull=True, status__in=(ImageStatus.READY, ImageStatus.CORRUPT), keep=False
    )
    for image in orphans:
        if delete_image(image, reason="its model was deleted"):
            deleted.append(image.pk)
    for newest in CheckpointImage.objects.filter(status=ImageStatus.READY).order_by(
        "model_name", "-created_at", "-id"
    ):
        deleted += drop_superseded(newest)
    return deleted + prune_corrupt() + drop_missing()


def drop_missing() -> list[int]:
    """Ready images whose directory is gone or incomplete: recorded deleted (the image
    store only skips them, as a read must)."""
    dropped = []
    error = "the image directory is gone or incomplete"
    for image in CheckpointImage.objects.filter(status=ImageStatus.READY, kind=ImageKind.CRIU):
        if is_image(Path(image.location)):
            continue
        # Losing means a restore or a deletion took the row first: theirs is the record.
        if transition(image, ImageStatus.READY, ImageStatus.DELETED, error=error):
            log.warning("image %s of %s is gone from disk", image.pk, image.model_name)
            dropped.append(image.pk)
    return dropped


def recover_images() -> list[int]:
    """Images left `writing` by a writer that is gone (kill -9 during a dump): failed.
    Images left `restoring` by one: ready again (a restore only reads the image)."""
    # Losing either means the writer ended its own image meanwhile: its record stands.
    for image in CheckpointImage.objects.filter(status=ImageStatus.RESTORING):
        if not writer_alive(image.writer) and transition(
            image, ImageStatus.RESTORING, ImageStatus.READY
        ):
            announce(image)
    failed = []
    for image in CheckpointImage.objects.filter(status=ImageStatus.WRITING):
        if writer_alive(image.writer) or not transition(
            image,
            ImageStatus.WRITING,
            ImageStatus.FAILED,
            error="the process writing this image ended before the dump finished",
            completed_at=timezone.now(),
        ):
            continue
        remove_files(image)
        announce(image)
        failed.append(image.pk)
        event(
            log,
            "checkpoint_failed",
            f"image {image.pk} of {image.model_name}: writer died",
            level=logging.WARNING,
            model=image.model_name,
            image=image.pk,
            error="writer died",
        )
    return failed
