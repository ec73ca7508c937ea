"""The worker's image store: CRIU image directories with a CheckpointImage row each.

Implements the core's `ImageStore`. A row is written `writing` before CRIU starts and
becomes `ready` only after CRIU succeeded and the image described itself; a dump that
fails, or whose writer dies (the sweep's `recover_images`), ends `failed`, so no
half-written image is ever restored. A restore that fails marks the image `corrupt` and
keeps it for inspection. Every status change is a compare-and-set (records.transition);
what losing one means is said at each.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from checkpoints_app.models import CheckpointImage, ImageKind, ImageStatus
from checkpoints_app.services.housekeeping import (
    collect_garbage,
    delete_image,
    drop_superseded,
    prune_corrupt,
)
from checkpoints_app.services.records import (
    announce,
    images_root,
    lost,
    remove_files,
    transition,
    used_bytes,
    writer_identity,
)
from llmux_site.core.criu import DUMP_LOG, RESTORE_LOG, DumpResult, RestoreResult, bytes_of
from llmux_site.core.images import ImageMeta, check_budget, fingerprint, is_image, read_meta
from llmux_site.core.processes import EngineProcess
from llmux_site.core.switching import EngineTarget
from llmux_site.logs import event
from models_app import metrics
from models_app.models import ModelDefinition, RegistryConfig

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.5  # seconds between progress writes of one image


class ImageUnavailable(Exception):
    """The image stopped being ready before its restore began (deleted meanwhile)."""


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "model"


def _log_text(images_dir: Path, name: str, limit: int = 4000) -> str:
    try:
        return (images_dir / name).read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _row(images_dir: Path) -> CheckpointImage:
    return CheckpointImage.objects.get(location=str(images_dir))


def _dumped_fields(result: DumpResult, meta: ImageMeta | None) -> dict[str, Any]:
    return {
        "bytes": result.bytes,
        "progress_bytes": result.bytes,
        "progress_total": result.bytes,
        "dump_ms": result.seconds * 1000,
        "completed_at": timezone.now(),
        "cuda_mode": meta.cuda_mode if meta else "",
        "tool_version": meta.tool_version if meta else "",
        "driver_version": meta.driver_version if meta else "",
        "error": "",
    }


class DbImageStore:
    """`ImageStore` on the images directory and CheckpointImage rows."""

    def __init__(self) -> None:
        self._progress_at: dict[str, float] = {}
        # checkpoint_path images `latest` picked that have no row yet (see `restoring`).
        self._unrecorded: dict[str, EngineTarget] = {}

    # -- dump -----------------------------------------------------------------------

    def new_image(self, target: EngineTarget, expected_bytes: int) -> Path:
        config = RegistryConfig.load()
        root = images_root(config)
        budget, reserve = settings.LLMUX_IMAGES_BUDGET, settings.LLMUX_IMAGES_RESERVE
        try:
            check_budget(
                expected_bytes, directory=root, budget=budget, used=used_bytes(), reserve=reserve
            )
        except Exception:
            collect_garbage()  # make room if we can, then decide
            check_budget(
                expected_bytes, directory=root, budget=budget, used=used_bytes(), reserve=reserve
            )
        stamp = timezone.now().strftime("%Y%m%dT%H%M%S")
        images_dir = root / _slug(target.name) / f"{stamp}-{uuid.uuid4().hex[:8]}"
        image = CheckpointImage.objects.create(
            model=ModelDefinition.objects.filter(name=target.name).first(),
            model_name=target.name,
            kind=ImageKind.CRIU,
            status=ImageStatus.WRITING,
            location=str(images_dir),
            expected_bytes=expected_bytes,
            progress_total=expected_bytes,
            pid=target.process.pid if target.process else None,
            pgid=target.process.pgid if target.process else None,
            weights_state=target.eviction.weights.value,
            fingerprint=fingerprint(target),
            writer=writer_identity(),
            log_path=str(images_dir / DUMP_LOG),
        )
        announce(image)
        return images_dir

    def progress(self, images_dir: Path, done: int, total: int) -> None:
        key = str(images_dir)
        now = time.monotonic()
        if now - self._progress_at.get(key, 0.0) < PROGRESS_EVERY:
            return
        self._progress_at[key] = now
        CheckpointImage.objects.filter(location=key).update(
            progress_bytes=done, progress_total=max(total, done)
        )
        image = CheckpointImage.objects.filter(location=key).first()
        if image is not None:
            announce(image)
            event(
                log,
                "checkpoint_progress",
                f"{image.model_name}: {done} of about {total} bytes",
                model=image.model_name,
                image=image.pk,
                done=done,
                total=total,
            )

    def dumped(self, target: EngineTarget, images_dir: Path, result: DumpResult) -> None:
        self._progress_at.pop(str(images_dir), None)
        image = _row(images_dir)
        fields = _dumped_fields(result, meta=read_meta(images_dir))
        if not transition(image, ImageStatus.WRITING, ImageStatus.READY, **fields):
            # The sweep took its writer for dead and failed it (and removed its files).
            lost(image, "the finished dump", ImageStatus.WRITING)
            return
        announce(image)
        event(
            log,
            "checkpoint_written",
            f"image {image.pk} of {image.model_name} written",
            model=image.model_name,
            image=image.pk,
            bytes=image.bytes,
            dump_ms=image.dump_ms,
        )
        metrics.CHECKPOINT_BYTES.labels(image.model_name, "dump").inc(image.bytes)
        metrics.CHECKPOINT_SECONDS.labels("dump").observe(result.seconds)
        drop_superseded(image)

    def dump_failed(self, target: EngineTarget, images_dir: Path, error: str) -> None:
        self._progress_at.pop(str(images_dir), None)
        image = _row(images_dir)
        text = (error + "\n" + _log_text(images_dir, DUMP_LOG)).strip()[-8000:]
        now = timezone.now()
        if not transition(
            image, ImageStatus.WRITING, ImageStatus.FAILED, error=text, completed_at=now
        ):
            lost(image, "the failed dump", ImageStatus.WRITING)  # the sweep failed it first
            return
        remove_files(image)  # half an image can never be restored: free the disk now
        announce(image)
        event(
            log,
            "checkpoint_failed",
            f"dump of {image.model_name} failed: {error}",
            level=logging.WARNING,
            model=image.model_name,
            image=image.pk,
            error=error,
        )

    # -- restore --------------------------------------------------------------------

    def latest(self, target: EngineTarget) -> Path | None:
        """A read (it writes no row): the operator's checkpoint_path it picks is recorded
        by `restoring`, once a restore from it begins."""
        path = newest_usable_image(target)
        if path is not None and target.checkpoint_path and path == Path(target.checkpoint_path):
            self._unrecorded[str(path)] = target
        return path

    def _record_operator_image(self, images_dir: Path) -> CheckpointImage:
        """The row of a checkpoint_path image `latest` picked that has none yet."""
        target = self._unrecorded.pop(str(images_dir), None)
        meta = read_meta(images_dir)
        if target is None or meta is None:
            return _row(images_dir)  # not one of ours to record: DoesNotExist as before
        image, _ = CheckpointImage.objects.get_or_create(
            location=str(images_dir),
            defaults={
                "model": ModelDefinition.objects.filter(name=target.name).first(),
                "model_name": target.name,
                "status": ImageStatus.READY,
                "bytes": bytes_of(images_dir),
                "pid": meta.pid or None,
                "pgid": meta.pgid or None,
                "weights_state": meta.weights,
                "fingerprint": meta.fingerprint,
                "cuda_mode": meta.cuda_mode,
                "tool_version": meta.tool_version,
                "driver_version": meta.driver_version,
                "keep": True,  # the operator's file: never collected
                "completed_at": timezone.now(),
            },
        )
        return image

    def reusable(self, target: EngineTarget, process: EngineProcess) -> Path | None:
        """With keep_images: the ready image this very engine was restored from."""
        if not RegistryConfig.load().keep_images:
            return None
        for image in CheckpointImage.objects.filter(
            model_name=target.name,
            kind=ImageKind.CRIU,
            status=ImageStatus.READY,
            fingerprint=fingerprint(target),
            pid=process.pid,
            restored_create_time__isnull=False,
        ):
            same = abs((image.restored_create_time or 0) - process.create_time) <= 0.02
            if same and is_image(Path(image.location)):
                return Path(image.location)
        return None

    def reused(self, target: EngineTarget, images_dir: Path) -> None:
        """The engine restored from the image was evicted again without a new dump."""
        CheckpointImage.objects.filter(location=str(images_dir)).update(
            reused_count=F("reused_count") + 1
        )
        event(
            log,
            "checkpoint_reused",
            f"{target.name} evicted to its image {images_dir} (no new dump)",
            model=target.name,
        )

    def restoring(self, images_dir: Path) -> None:
        if str(images_dir) in self._unrecorded:
            image = self._record_operator_image(images_dir)
        else:
            image = _row(images_dir)
        # Raises when it loses (the image was deleted since `latest` chose it): the
        # bring-up then cold-starts, and the image is not marked corrupt.
        if not transition(
            image,
            ImageStatus.READY,
            ImageStatus.RESTORING,
            writer=writer_identity(),  # a restore whose worker died is undone by the sweep
            progress_bytes=0,
            progress_total=image.bytes,
        ):
            lost(image, "the restore", ImageStatus.READY)
            raise ImageUnavailable(f"image {image.pk} of {image.model_name} is not ready")
        announce(image)

    def restored(self, target: EngineTarget, images_dir: Path, result: RestoreResult) -> None:
        self._progress_at.pop(str(images_dir), None)
        image = _row(images_dir)
        if not transition(  # ready again: it may be restored again
            image,
            ImageStatus.RESTORING,
            ImageStatus.READY,
            restored_count=image.restored_count + 1,  # only the restorer moves it
            last_restored_at=timezone.now(),
            restore_ms=result.seconds * 1000,
            progress_bytes=image.bytes,
            progress_total=image.bytes,
            pid=result.process.pid,
            pgid=result.process.pgid,
            restored_create_time=result.process.create_time,
        ):
            lost(image, "the finished restore", ImageStatus.RESTORING)
            return
        metrics.CHECKPOINT_BYTES.labels(image.model_name, "restore").inc(image.bytes)
        metrics.CHECKPOINT_SECONDS.labels("restore").observe(result.seconds)
        announce(image)
        event(
            log,
            "restore_done",
            f"image {image.pk} of {image.model_name} restored",
            model=image.model_name,
            image=image.pk,
            restore_ms=image.restore_ms,
        )

    def restore_failed(self, target: EngineTarget, images_dir: Path, error: str) -> None:
        self._progress_at.pop(str(images_dir), None)
        image = _row(images_dir)
        text = (error + "\n" + _log_text(images_dir, RESTORE_LOG)).strip()[-8000:]
        if not transition(image, ImageStatus.RESTORING, ImageStatus.CORRUPT, error=text):
            lost(image, "the failed restore", ImageStatus.RESTORING)
            return
        announce(image)
        event(
            log,
            "restore_failed",
            f"restore of {image.model_name} failed: {error}",
            level=logging.WARNING,
            model=image.model_name,
            image=image.pk,
            error=error,
        )
        prune_corrupt(image.model_name)  # repeated failures must not fill the disk

    def verified(self, target: EngineTarget, images_dir: Path) -> None:
        image = _row(images_dir)
        image.verified_at = timezone.now()
        image.save(update_fields=["verified_at"])
        if not RegistryConfig.load().keep_images and not image.keep:
            delete_image(image, reason="restored and verified (keep_images is off)")


def newest_usable_image(target: EngineTarget) -> Path | None:
    """The image a bring-up of `target` would restore: its newest ready image made from the
    same launch spec whose directory is whole, else its checkpoint_path. Reads only: a ready
    image gone from disk is skipped here (housekeeping.drop_missing records it)."""
    ready = CheckpointImage.objects.filter(
        model_name=target.name,
        kind=ImageKind.CRIU,
        status=ImageStatus.READY,
        fingerprint=fingerprint(target),
    )
    for image in ready.order_by("-created_at", "-id"):
        if is_image(Path(image.location)):
            return Path(image.location)
    return _checkpoint_path(target)


def _checkpoint_path(target: EngineTarget) -> Path | None:
    """The model's configured image (lazy restore), unless it failed before."""
    if not target.checkpoint_path:
        return None
    path = Path(target.checkpoint_path)
    known = CheckpointImage.objects.filter(location=str(path)).first()
    if known is not None and known.status not in (ImageStatus.READY, ImageStatus.RESTORING):
        return None  # it failed to restore once: cold-start from now on
    meta = read_meta(path)
    if meta is None or not is_image(path):
        log.warning("checkpoint_path %s of %s is not an llmux image", path, target.name)
        return None
    if meta.model != target.name:
        log.warning("checkpoint_path %s holds %s, not %s", path, meta.model, target.name)
    return path
