"""The database image store with real CRIU: records, reuse, lazy restore, housekeeping."""

from __future__ import annotations

import dataclasses
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings
from django.utils import timezone

from checkpoints_app.models import CheckpointImage, ImageStatus
from checkpoints_app.services.housekeeping import collect_garbage, recover_images
from checkpoints_app.services.records import writer_identity
from checkpoints_app.services.store import DbImageStore
from llmux_site.core.criu import Criu
from llmux_site.core.eviction_policy import EvictionPolicy
from llmux_site.core.process_actions import HostProcessActions
from llmux_site.core.switching import BringUpKind, EngineStatus, EngineTarget, Outcome
from models_app.models import ModelDefinition, RegistryConfig
from tests.checkpoints.test_checkpoint_switch import WEIGHTS, ok, switch
from tests.checkpoints.test_criu import answer
from tests.core.switch_ports import InMemoryPorts, SimModels
from tests.simulator.harness import http_request

pytestmark = pytest.mark.django_db(transaction=True)

OFFLOAD = EvictionPolicy.from_label("offload+checkpoint")


@pytest.fixture
def images_dir(short_tmp_dir: Path) -> Iterator[Path]:
    root = short_tmp_dir / "images"
    RegistryConfig.objects.update_or_create(pk=1, defaults={"images_dir": str(root)})
    yield root


def model(target: EngineTarget) -> ModelDefinition:
    assert target.address.uds is not None
    return ModelDefinition.objects.create(
        name=target.name, model_path=target.name, uds_path=target.address.uds
    )


def images_of(name: str) -> list[CheckpointImage]:
    return list(
        CheckpointImage.objects.filter(model_name=name).select_related("model").order_by("id")
    )


class Setup:
    def __init__(self, sims: SimModels, criu: Criu) -> None:
        self.sims = sims
        self.ports: InMemoryPorts = sims.ports()
        self.actions = HostProcessActions(criu=criu, images=DbImageStore())
        self.a = sims.target("m/a", uds=True, eviction=OFFLOAD, extra_args=WEIGHTS)
        self.b = sims.target("m/b", uds=True)

    async def models(self) -> None:
        await sync_to_async(model)(self.a)
        await sync_to_async(model)(self.b)

    async def a_checkpointed(self) -> None:
        """a cold-started, then checkpointed by a switch to b."""
        ok(await switch(self.ports, self.actions, self.a), BringUpKind.COLD_START)
        ok(await switch(self.ports, self.actions, self.b, self.a), BringUpKind.COLD_START)
        self.track(self.b)

    def track(self, target: EngineTarget) -> None:
        process = self.ports.last(target.name).process
        assert process is not None
        self.sims.track(process)


@pytest.fixture
def setup(sims: SimModels, criu: Criu, images_dir: Path) -> Setup:
    return Setup(sims, criu)


class SeeingStore(DbImageStore):
    """The database store, also noting the image's recorded status at each progress."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def progress(self, images_dir: Path, done: int, total: int) -> None:
        self.seen.append(CheckpointImage.objects.get(location=str(images_dir)).status)
        super().progress(images_dir, done, total)


async def test_each_image_is_recorded_from_writing_to_verified(setup: Setup) -> None:
    store = SeeingStore()
    setup.actions.images = store
    await setup.models()
    await setup.a_checkpointed()
    assert set(store.seen) == {ImageStatus.WRITING}
    store.seen.clear()
    (image,) = await sync_to_async(images_of)("m/a")
    assert image.status == ImageStatus.READY and image.completed_at is not None
    assert image.bytes > 256 * 1024**2 and image.dump_ms and image.dump_ms > 0
    assert image.expected_bytes >= image.bytes * 0.9  # the estimate the budget used
    assert image.tool_version.startswith("4.") and image.cuda_mode == "none"
    assert image.weights_state == "offload" and image.fingerprint
    assert Path(image.log_path).is_file() and image.model is not None

    ok(await switch(setup.ports, setup.actions, setup.a, setup.b), BringUpKind.RESTORE)
    setup.track(setup.a)
    await sync_to_async(image.refresh_from_db)()
    assert image.restored_count == 1 and image.restore_ms and image.verified_at is not None
    assert image.status == ImageStatus.READY  # keep_images (the default) keeps it
    assert store.seen and set(store.seen) == {ImageStatus.RESTORING}  # while criu read it


async def test_an_image_is_reused_when_the_record_forgot_it_and_dropped_once_superseded(
    setup: Setup,
) -> None:
    await setup.models()
    await setup.a_checkpointed()
    # As after a restart that lost the runtime record: a is "stopped", yet its image is
    # there, made from the same launch spec, so it is restored instead of cold-started.
    setup.ports.changes = [c for c in setup.ports.changes if c.model != "m/a"]
    forgotten = dataclasses.replace(setup.a, status=EngineStatus.STOPPED)
    ok(await switch(setup.ports, setup.actions, forgotten, setup.b), BringUpKind.RESTORE)
    setup.track(setup.a)
    assert http_request(setup.a.address, "GET", "/sim/state").json()["weights_ok"]

    # Checkpointed again into a fresh image (an engine that is not known to come from the
    # image is dumped, not evicted back to it): the restored and verified one is superseded.
    await sync_to_async(CheckpointImage.objects.update)(restored_create_time=None)
    ok(await switch(setup.ports, setup.actions, setup.b, setup.a), BringUpKind.WAKE)
    first, second = await sync_to_async(images_of)("m/a")
    assert (first.status, second.status) == (ImageStatus.DELETED, ImageStatus.READY)
    assert not Path(first.location).exists() and Path(second.location).is_dir()
    assert "superseded" in first.error


async def test_a_changed_launch_spec_never_restores_an_old_image(setup: Setup) -> None:
    await setup.models()
    await setup.a_checkpointed()
    changed = dataclasses.replace(
        setup.a,
        status=EngineStatus.STOPPED,
        spec=dataclasses.replace(setup.a.spec, argv=[*setup.a.spec.argv, "--sim-seed", "7"]),
    )
    assert await setup.actions.has_image(changed) is False
    assert await setup.actions.has_image(dataclasses.replace(setup.a, status=EngineStatus.STOPPED))


async def test_with_keep_images_off_a_verified_image_is_deleted(setup: Setup) -> None:
    await setup.models()
    await sync_to_async(RegistryConfig.objects.update)(keep_images=False)
    await setup.a_checkpointed()
    ok(await switch(setup.ports, setup.actions, setup.a, setup.b), BringUpKind.RESTORE)
    setup.track(setup.a)
    (image,) = await sync_to_async(images_of)("m/a")
    assert image.status == ImageStatus.DELETED and image.verified_at is not None
    assert not Path(image.location).exists()


async def test_a_checkpoint_path_is_restored_lazily_at_start_up(
    setup: Setup, short_tmp_dir: Path
) -> None:
    await setup.models()
    await setup.a_checkpointed()
    (made,) = await sync_to_async(images_of)("m/a")
    # The image moves elsewhere and llmux forgets it (a new database, say).
    kept = short_tmp_dir / "kept-image"
    shutil.copytree(made.location, kept)
    await sync_to_async(CheckpointImage.objects.all().delete)()
    setup.ports.changes = [c for c in setup.ports.changes if c.model != "m/a"]
    lazy = dataclasses.replace(setup.a, status=EngineStatus.NOT_STARTED, checkpoint_path=str(kept))

    ok(await switch(setup.ports, setup.actions, lazy, setup.b), BringUpKind.RESTORE)
    setup.track(setup.a)
    assert answer(setup.a)
    (row,) = await sync_to_async(images_of)("m/a")
    assert (row.location, row.keep, row.restored_count) == (str(kept), True, 1)


async def test_a_disk_budget_too_small_downgrades_to_stop_without_a_row(setup: Setup) -> None:
    await setup.models()
    with override_settings(LLMUX_IMAGES_BUDGET=1024**2):
        ok(await switch(setup.ports, setup.actions, setup.a), BringUpKind.COLD_START)
        result = await switch(setup.ports, setup.actions, setup.b, setup.a)
    setup.track(setup.b)
    assert (result.outcome, result.escalated) == (Outcome.SUCCEEDED, True)
    assert "images budget" in result.error and "evicting by stop instead" in result.error
    assert setup.ports.last("m/a").status is EngineStatus.STOPPED
    assert await sync_to_async(images_of)("m/a") == []


async def test_images_of_deleted_models_are_collected(setup: Setup) -> None:
    await setup.models()
    await setup.a_checkpointed()
    await sync_to_async(ModelDefinition.objects.filter(name="m/a").delete)()
    assert await sync_to_async(collect_garbage)()
    (image,) = await sync_to_async(images_of)("m/a")
    assert image.status == ImageStatus.DELETED and not Path(image.location).exists()


def test_an_image_whose_writer_died_is_failed_never_ready(images_dir: Path) -> None:
    location = images_dir / "m" / "half"
    location.mkdir(parents=True)
    (location / "pages-1.img").write_bytes(b"\0" * 4096)
    writer = f"{socket.gethostname()}:999999:1.0"  # this host, a process that is gone
    dead = CheckpointImage.objects.create(
        model_name="m", location=str(location), writer=writer, status=ImageStatus.WRITING
    )
    assert recover_images() == [dead.pk]
    dead.refresh_from_db()
    assert dead.status == ImageStatus.FAILED and "ended before the dump finished" in dead.error
    assert not location.exists()


def test_an_image_whose_restorer_died_is_ready_again(images_dir: Path) -> None:
    location = images_dir / "m" / "intact"
    location.mkdir(parents=True)
    writer = f"{socket.gethostname()}:999999:1.0"  # this host, a process that is gone
    image = CheckpointImage.objects.create(
        model_name="m",
        location=str(location),
        writer=writer,
        status=ImageStatus.RESTORING,
        completed_at=timezone.now(),  # it was ready before the restore began
    )
    live = CheckpointImage.objects.create(
        model_name="m",
        location=str(images_dir / "m" / "busy"),
        writer=writer_identity(),  # this test process: still restoring
        status=ImageStatus.RESTORING,
        completed_at=timezone.now(),
    )
    assert recover_images() == []  # nothing failed
    image.refresh_from_db()
    live.refresh_from_db()
    assert image.status == ImageStatus.READY and location.exists()
    assert live.status == ImageStatus.RESTORING


async def test_with_keep_images_the_restored_engine_is_evicted_to_its_image(setup: Setup) -> None:
    await sync_to_async(RegistryConfig.objects.filter(pk=1).update)(keep_images=True)
    await setup.models()
    await setup.a_checkpointed()
    ok(await switch(setup.ports, setup.actions, setup.a, setup.b), BringUpKind.RESTORE)
    ok(await switch(setup.ports, setup.actions, setup.b, setup.a), BringUpKind.WAKE)
    (image,) = await sync_to_async(images_of)("m/a")  # no second image of a
    assert (image.status, image.restored_count, image.reused_count) == (ImageStatus.READY, 1, 1)

    ok(await switch(setup.ports, setup.actions, setup.a, setup.b), BringUpKind.RESTORE)
    setup.track(setup.a)
    (image,) = await sync_to_async(images_of)("m/a")
    assert image.restored_count == 2  # the one image, restored again
