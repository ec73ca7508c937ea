"""Image status changes are compare-and-set: one that starts from a stale status loses and
changes nothing (the row, and the files, stay as whoever moved first left them)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from django.utils import timezone

from checkpoints_app.models import CheckpointImage, ImageStatus
from checkpoints_app.services.housekeeping import delete_image
from checkpoints_app.services.records import transition
from checkpoints_app.services.store import DbImageStore, ImageUnavailable
from llmux_site.core.criu import DumpResult, RestoreResult
from llmux_site.core.processes import EngineProcess
from llmux_site.core.switching import EngineTarget
from models_app.models import ModelDefinition, RegistryConfig
from models_app.services.runtime import engine_target

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(images_root: Path) -> Path:
    return images_root  # the registry's images directory (conftest)


def image_in(root: Path, status: ImageStatus, **fields: object) -> CheckpointImage:
    location = root / "m" / "one"
    location.mkdir(parents=True)
    (location / "pages-1.img").write_bytes(b"\0" * 64)
    done = None if status == ImageStatus.WRITING else timezone.now()
    return CheckpointImage.objects.create(
        model_name="m",
        location=str(location),
        status=status,
        bytes=64,
        completed_at=done,
        **fields,
    )


def target(root: Path) -> EngineTarget:
    model = ModelDefinition.objects.create(name="m", model_path="m", uds_path=str(root / "m.sock"))
    return engine_target(model, RegistryConfig.load())


def row(image: CheckpointImage) -> CheckpointImage:
    return CheckpointImage.objects.get(pk=image.pk)


def test_a_transition_from_a_stale_status_loses_and_changes_nothing(root: Path) -> None:
    image = image_in(root, ImageStatus.READY)
    assert not transition(image, ImageStatus.WRITING, ImageStatus.FAILED, error="writer died")
    assert (row(image).status, row(image).error) == (ImageStatus.READY, "")
    assert image.status == ImageStatus.READY and image.error == ""  # the copy in hand too


def test_a_transition_from_the_expected_status_wins_and_writes_its_fields(root: Path) -> None:
    image = image_in(root, ImageStatus.READY)
    assert transition(image, ImageStatus.READY, ImageStatus.CORRUPT, error="criu said no")
    assert (row(image).status, row(image).error) == (ImageStatus.CORRUPT, "criu said no")
    assert image.status == ImageStatus.CORRUPT


def test_a_deletion_loses_to_a_restore_that_began_since_and_keeps_the_files(root: Path) -> None:
    image = image_in(root, ImageStatus.READY)
    chosen = row(image)  # the garbage collection read it ready...
    DbImageStore().restoring(Path(image.location))  # ...and a restore began meanwhile
    assert delete_image(chosen, reason="superseded") is False
    assert row(image).status == ImageStatus.RESTORING and row(image).error == ""
    assert Path(image.location).is_dir()


def test_a_restore_of_an_image_deleted_since_it_was_chosen_is_refused(root: Path) -> None:
    image = image_in(root, ImageStatus.READY)
    assert delete_image(row(image), reason="superseded")
    with pytest.raises(ImageUnavailable):  # the bring-up cold-starts instead
        DbImageStore().restoring(Path(image.location))
    assert row(image).status == ImageStatus.DELETED and row(image).writer == ""


def test_a_dump_the_sweep_already_failed_never_becomes_ready(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = image_in(root, ImageStatus.FAILED, error="the process writing this image ended")
    location = Path(image.location)
    with caplog.at_level(logging.WARNING):
        DbImageStore().dumped(target(root), location, DumpResult(location, 4096, 1.5))
    assert (row(image).status, row(image).bytes) == (ImageStatus.FAILED, 64)
    assert "the process writing this image ended" in row(image).error
    assert "left as it is" in caplog.text


def test_a_finished_restore_of_an_image_no_longer_restoring_leaves_it(root: Path) -> None:
    image = image_in(root, ImageStatus.READY)  # the sweep took its restorer for dead
    process = EngineProcess(pid=os.getpid(), create_time=1.0, pgid=os.getpid())
    DbImageStore().restored(target(root), Path(image.location), RestoreResult(process, 0.5))
    assert (row(image).status, row(image).restored_count, row(image).pid) == (
        ImageStatus.READY,
        0,
        None,
    )


def test_a_failed_restore_of_an_image_no_longer_restoring_is_not_marked_corrupt(
    root: Path,
) -> None:
    image = image_in(root, ImageStatus.READY)
    DbImageStore().restore_failed(target(root), Path(image.location), "criu restore failed")
    assert (row(image).status, row(image).error) == (ImageStatus.READY, "")
