"""models_app reaches checkpoint images only through its port, which checkpoints_app fills."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.utils import timezone

from checkpoints_app.models import CheckpointImage, ImageStatus
from checkpoints_app.services.store import DbImageStore
from llmux_site.core.images import fingerprint
from models_app import image_port, selectors
from models_app.image_port import DeletedImage, ImageBusy, ImageNotFound
from models_app.models import EngineRuntime, ModelDefinition, RegistryConfig
from models_app.services.runtime import engine_target

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(images_root: Path) -> Path:
    return images_root  # the registry's images directory (conftest)


def ready_image(root: Path) -> CheckpointImage:
    location = root / "m" / "one"
    location.mkdir(parents=True)
    return CheckpointImage.objects.create(
        model_name="m",
        location=str(location),
        status=ImageStatus.READY,
        completed_at=timezone.now(),
    )


def test_checkpoints_app_registers_its_image_store_and_hooks() -> None:
    assert isinstance(image_port.store(), DbImageStore)
    assert image_port.recover() == [] and image_port.collect_garbage() == []
    model = ModelDefinition.objects.create(name="m", model_path="m", port=18123)
    assert image_port.has_usable_image(model) is False


def test_an_operator_deletes_a_ready_image_through_the_port(root: Path) -> None:
    image = ready_image(root)
    assert image_port.delete(image.pk, reason="deleted by ops") == DeletedImage(image.pk, "m")
    image.refresh_from_db()
    assert image.status == ImageStatus.DELETED and image.error == "deleted by ops"
    assert not Path(image.location).exists()


def test_an_operator_cannot_delete_a_missing_or_busy_image(root: Path) -> None:
    with pytest.raises(ImageNotFound):
        image_port.delete(999_999, reason="deleted by ops")
    image = ready_image(root)
    DbImageStore().restoring(Path(image.location))
    with pytest.raises(ImageBusy, match="is restoring: nothing to delete now"):
        image_port.delete(image.pk, reason="deleted by ops")
    assert Path(image.location).is_dir()


def test_the_snapshot_hears_of_the_newest_dump_in_progress(root: Path) -> None:
    assert image_port.dump_in_progress() is None
    for name, done in (("a", 10), ("b", 20)):
        CheckpointImage.objects.create(
            model_name=name,
            location=str(root / name),
            status=ImageStatus.WRITING,
            progress_bytes=done,
            progress_total=100,
        )
    assert image_port.dump_in_progress() == ("b", 20, 100)


def test_without_checkpoints_app_there_is_no_image_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_port, "_registered", None)
    assert image_port.store() is None and image_port.recover() == []
    assert image_port.collect_garbage() == [] and image_port.dump_in_progress() is None
    model = ModelDefinition.objects.create(name="m", model_path="m", port=18123)
    assert image_port.has_usable_image(model) is False
    with pytest.raises(ImageNotFound):
        image_port.delete(1, reason="deleted by ops")


def gone_image_of(model: ModelDefinition, root: Path) -> CheckpointImage:
    """A ready image of `model`'s current launch whose directory is gone from disk."""
    target = engine_target(model, RegistryConfig.current(), selectors.engine_runtime(model))
    return CheckpointImage.objects.create(
        model=model,
        model_name=model.name,
        location=str(root / model.name / "gone"),
        status=ImageStatus.READY,
        fingerprint=fingerprint(target),
        completed_at=timezone.now(),
    )


def test_asking_whether_a_model_has_an_image_writes_no_row(short_tmp_dir: Path) -> None:
    RegistryConfig.objects.all().delete()
    model = ModelDefinition.objects.create(name="m", model_path="m", port=18123)
    image = gone_image_of(model, short_tmp_dir)
    rows = (RegistryConfig.objects.count(), EngineRuntime.objects.count())

    assert image_port.has_usable_image(model) is False

    assert (RegistryConfig.objects.count(), EngineRuntime.objects.count()) == rows == (0, 0)
    image.refresh_from_db()
    assert image.status == ImageStatus.READY  # a read leaves the record to the sweep


def test_the_sweep_records_a_ready_image_gone_from_disk_as_deleted(root: Path) -> None:
    model = ModelDefinition.objects.create(name="m", model_path="m", port=18123)
    image = gone_image_of(model, root)

    assert image_port.collect_garbage() == [image.pk]

    image.refresh_from_db()
    assert image.status == ImageStatus.DELETED
    assert image.error == "the image directory is gone or incomplete"
