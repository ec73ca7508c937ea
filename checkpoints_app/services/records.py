"""Image rows and their files: where they live, who writes them, and each status change.

The image store (store.py) and housekeeping.py both change image statuses, each through
`transition`, a compare-and-set like the engine rows': the row moves only from the status
the caller expects, so a restore and a deletion (or a dump and the sweep that thinks its
writer dead) cannot both win. Each caller decides what losing means.
"""

from __future__ import annotations

import logging
import shutil
import socket
from pathlib import Path
from typing import Any

import psutil
from django.conf import settings
from django.db.models import Sum

from checkpoints_app.models import CheckpointImage, ImageStatus
from llmux_site.core.processes import UNREADABLE
from models_app import protocol
from models_app.image_port import DumpInProgress
from models_app.models import RegistryConfig

log = logging.getLogger(__name__)

# Statuses whose files are on disk and count against the budget.
ON_DISK = (ImageStatus.WRITING, ImageStatus.READY, ImageStatus.RESTORING, ImageStatus.CORRUPT)


def transition(
    image: CheckpointImage, expected: ImageStatus, new: ImageStatus, **fields: Any
) -> bool:
    """Move `image`'s row from `expected` to `new`, writing `fields` with it, only if it is
    still `expected`; whether it was. A win updates `image` too; a loss changes nothing."""
    moved = CheckpointImage.objects.filter(pk=image.pk, status=expected).update(
        status=new, **fields
    )
    if not moved:
        return False
    image.status = new
    for name, value in fields.items():
        setattr(image, name, value)
    return True


def lost(
    image: CheckpointImage, step: str, expected: ImageStatus, *, level: int = logging.WARNING
) -> None:
    """Log a transition that lost: the row is left as whoever moved it first wrote it."""
    now = CheckpointImage.objects.filter(pk=image.pk).values_list("status", flat=True).first()
    log.log(
        level,
        "image %s of %s: %s expected it %s, but it is %s now; left as it is",
        image.pk,
        image.model_name,
        step,
        expected,
        now or "gone",
    )


def images_root(config: RegistryConfig | None = None) -> Path:
    config = config or RegistryConfig.load()
    return Path(config.images_dir) if config.images_dir else Path(settings.LLMUX_DIRS["images"])


def writer_identity() -> str:
    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{me.create_time():.3f}"


def writer_alive(writer: str) -> bool:
    """Whether the process that writes an image still runs (on this host)."""
    host, _, rest = writer.partition(":")
    pid, _, created = rest.partition(":")
    if host != socket.gethostname():
        return True  # another host's writer: that host's sweep decides
    try:
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(process.create_time() - float(created)) < 1.0
    except (*UNREADABLE, ValueError):
        return False


def used_bytes() -> int:
    """What images on disk take (a dump in progress counts by its estimate)."""
    on_disk = CheckpointImage.objects.filter(status__in=ON_DISK)
    written = on_disk.exclude(status=ImageStatus.WRITING).aggregate(n=Sum("bytes"))["n"] or 0
    writing = on_disk.filter(status=ImageStatus.WRITING).aggregate(n=Sum("expected_bytes"))["n"]
    return int(written) + int(writing or 0)


def dump_in_progress() -> DumpInProgress | None:
    """The newest image being written now, and how far its dump got."""
    image = CheckpointImage.objects.filter(status=ImageStatus.WRITING).order_by("-id").first()
    if image is None:
        return None
    return DumpInProgress(image.model_name, image.progress_bytes, image.progress_total)


def models_with_ready_images() -> set[str]:
    """The models that have at least one ready image (one query)."""
    ready = CheckpointImage.objects.filter(status=ImageStatus.READY)
    return set(ready.values_list("model_name", flat=True).distinct())


def restore_in_progress() -> DumpInProgress | None:
    """The newest image being restored now, and how much of it was read."""
    image = CheckpointImage.objects.filter(status=ImageStatus.RESTORING).order_by("-id").first()
    if image is None:
        return None
    return DumpInProgress(image.model_name, image.progress_bytes, image.progress_total)


def announce(image: CheckpointImage) -> None:
    """Tell the dashboard and other processes (host bus) about an image's progress."""
    protocol.after_commit(
        protocol.ImageProgress(
            image=image.pk,
            model=image.model_name,
            status=image.status,
            done=image.progress_bytes,
            total=image.progress_total,
        )
    )


def remove_files(image: CheckpointImage) -> None:
    """Delete an image's directory, inside the images root only."""
    path = Path(image.location)
    root = images_root().resolve()
    if path.resolve().is_relative_to(root) and path.resolve() != root:
        shutil.rmtree(path, ignore_errors=True)
    else:  # an operator's checkpoint_path: never deleted by llmux
        log.warning("not deleting %s: it is outside the images directory %s", path, root)
