"""Corrupt images are kept within a budget: the newest LLMUX_IMAGES_KEEP_CORRUPT of each
model keep their files for inspection, older ones are deleted, recorded (issue 13)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from checkpoints_app.models import CheckpointImage, ImageStatus
from checkpoints_app.services.housekeeping import collect_garbage
from checkpoints_app.services.store import DbImageStore
from llmux_site.core.criu import Criu
from llmux_site.core.eviction_policy import EvictionPolicy
from llmux_site.core.process_actions import HostProcessActions
from llmux_site.core.switching import BringUpKind, Outcome
from models_app.models import ModelDefinition
from tests.checkpoints.test_checkpoint_switch import ok, switch
from tests.core.switch_ports import SimModels

pytestmark = pytest.mark.django_db(transaction=True)

DISCARD = EvictionPolicy.from_label("discard+checkpoint")


def corrupt_image(root: Path, model: str, name: str, *, keep: bool = False) -> CheckpointImage:
    location = root / model / name
    location.mkdir(parents=True)
    (location / "core-1.img").write_bytes(b"\0" * 64)
    return CheckpointImage.objects.create(
        model=ModelDefinition.objects.get_or_create(
            name=model, defaults={"model_path": model, "uds_path": str(root / f"{model}.sock")}
        )[0],
        model_name=model,
        location=str(location),
        status=ImageStatus.CORRUPT,
        error="criu restore failed",
        keep=keep,
    )


def on_disk(name: str) -> list[str]:
    """The model's images whose files are still there, oldest first."""
    rows = CheckpointImage.objects.filter(model_name=name).order_by("created_at", "id")
    return [Path(image.location).name for image in rows if Path(image.location).exists()]


@override_settings(LLMUX_IMAGES_KEEP_CORRUPT=2)
def test_the_garbage_collection_keeps_the_newest_corrupt_images_of_each_model(
    images_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    made = [corrupt_image(images_root, "a", f"{n}") for n in range(4)]
    corrupt_image(images_root, "b", "only")
    corrupt_image(images_root, "a", "operators", keep=True)  # the newest, and never deleted
    with caplog.at_level(logging.INFO, logger="checkpoints_app.services.housekeeping"):
        deleted = collect_garbage()

    assert sorted(deleted) == [made[0].pk, made[1].pk]
    assert on_disk("a") == ["2", "3", "operators"] and on_disk("b") == ["only"]
    for image in made[:2]:
        image.refresh_from_db()
        assert image.status == ImageStatus.DELETED
        assert "newest 2 corrupt images" in image.error  # why the files went
        assert "criu restore failed" in image.error  # and why it was corrupt
    logged = [r for r in caplog.records if getattr(r, "event", "") == "image_deleted"]
    assert len(logged) == 2


@override_settings(LLMUX_IMAGES_KEEP_CORRUPT=0)
def test_a_budget_of_none_deletes_every_corrupt_image_but_an_operators(images_root: Path) -> None:
    corrupt_image(images_root, "a", "1")
    corrupt_image(images_root, "a", "operators", keep=True)
    collect_garbage()
    assert on_disk("a") == ["operators"]


async def test_repeated_failed_restores_keep_at_most_the_configured_corrupt_images(
    sims: SimModels, criu: Criu, images_root: Path
) -> None:
    ports = sims.ports()
    actions = HostProcessActions(criu=criu, images=DbImageStore())
    a = sims.target("m/a", uds=True, eviction=DISCARD)
    b = sims.target("m/b", uds=True)
    for target in (a, b):
        assert target.address.uds is not None
        await sync_to_async(ModelDefinition.objects.create)(
            name=target.name, model_path=target.name, uds_path=target.address.uds
        )
    ok(await switch(ports, actions, a), BringUpKind.COLD_START)
    with override_settings(LLMUX_IMAGES_KEEP_CORRUPT=2):
        for _ in range(4):
            to_b = await switch(ports, actions, b, a)  # dumps a into a new image
            assert (to_b.outcome, to_b.escalated) == (Outcome.SUCCEEDED, False), to_b.error
            image = await sync_to_async(CheckpointImage.objects.get)(
                model_name=a.name, status=ImageStatus.READY
            )
            next(Path(image.location).glob("core-*.img")).write_bytes(b"\0" * 64)
            fallback = await switch(ports, actions, a, b)
            assert (fallback.outcome, fallback.bringup) == (
                Outcome.SUCCEEDED,
                BringUpKind.COLD_START,
            ), fallback.error
    for target in (a, b):
        process = ports.last(target.name).process
        assert process is not None
        sims.track(process)

    rows = await sync_to_async(list)(CheckpointImage.objects.filter(model_name=a.name))
    assert (
        sorted(row.status for row in rows) == [ImageStatus.CORRUPT] * 2 + [ImageStatus.DELETED] * 2
    )
    kept = sorted((row for row in rows if row.status == ImageStatus.CORRUPT), key=lambda r: r.pk)
    assert [row.pk for row in kept] == sorted(row.pk for row in rows)[2:]  # the newest two
    assert all(Path(row.location).is_dir() for row in kept)
    assert not any(Path(row.location).exists() for row in rows if row not in kept)
