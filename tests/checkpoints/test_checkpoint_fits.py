"""llmux's rule, with real CRIU: when the incoming model is already checkpointed and the
outgoing model's image would not fit beside its image, the outgoing model is stopped
instead of checkpointed, and the incoming one still comes back from its image. It holds
whatever the images budget is: none (the disk decides), one larger than the disk, or one
smaller than the disk."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import override_settings

from checkpoints_app.models import ImageStatus
from checkpoints_app.services.records import used_bytes
from llmux_site.core.switching import BringUpKind, EngineStatus, Outcome
from tests.checkpoints.test_checkpoint_switch import ok, switch
from tests.checkpoints.test_image_store import OFFLOAD, Setup, images_of
from tests.checkpoints.test_image_store import images_dir as images_dir
from tests.checkpoints.test_image_store import setup as setup

pytestmark = pytest.mark.django_db(transaction=True)

GiB = 1024**3


@contextmanager
def disk_with_room_for(room: int) -> Iterator[None]:
    """The images' filesystem reports `room` bytes free beyond the reserve. The one seam
    (llmux_site.core.images.check_budget asks shutil): a filesystem that small would
    need a mount, and another test's image written or deleted meanwhile would move it."""
    real = shutil.disk_usage
    with mock.patch.object(shutil, "disk_usage", autospec=True) as disk_usage:

        def usage(path: str) -> object:
            total, used, _ = real(path)
            return type(real(path))(total, used, settings.LLMUX_IMAGES_RESERVE + room)

        disk_usage.side_effect = usage
        yield


@contextmanager
def budget_beside_a(spare: int, on_disk: int) -> Iterator[None]:
    """An images budget that holds what is on disk (a's image) and `spare` bytes more."""
    with override_settings(LLMUX_IMAGES_BUDGET=on_disk + spare):
        yield


@contextmanager
def large_budget_small_disk(spare: int, on_disk: int) -> Iterator[None]:
    with override_settings(LLMUX_IMAGES_BUDGET=1024 * GiB), disk_with_room_for(spare):
        yield


@contextmanager
def no_budget_small_disk(spare: int, on_disk: int) -> Iterator[None]:
    with override_settings(LLMUX_IMAGES_BUDGET=None), disk_with_room_for(spare):
        yield


LIMITS = {
    "no budget, the disk is full": no_budget_small_disk,
    "a budget larger than the disk": large_budget_small_disk,
    "a budget smaller than the disk": budget_beside_a,
}


@pytest.mark.parametrize("limit", LIMITS, ids=list(LIMITS))
async def test_the_outgoing_model_is_stopped_when_its_image_would_not_fit_beside_the_incoming(
    setup: Setup,
    limit: str,
) -> None:
    setup.b = setup.sims.target("m/b", uds=True, eviction=OFFLOAD)  # both checkpoint
    await setup.models()
    await setup.a_checkpointed()  # a's image on disk, b running
    (image_a,) = await sync_to_async(images_of)("m/a")

    spare = 8 * 1024**2  # far less than b's image (hundreds of MiB)
    on_disk = await sync_to_async(used_bytes)()
    assert on_disk >= image_a.bytes > 0
    with LIMITS[limit](spare, on_disk):
        result = await switch(setup.ports, setup.actions, setup.a, setup.b)
    setup.track(setup.a)

    assert (result.outcome, result.bringup, result.escalated) == (
        Outcome.SUCCEEDED,
        BringUpKind.RESTORE,  # a came back from its image, not a cold start
        True,
    )
    assert "evicting by stop instead" in result.error, result.error
    assert setup.ports.last("m/b").status is EngineStatus.STOPPED
    assert await sync_to_async(images_of)("m/b") == []  # nothing written for b
    (after,) = await sync_to_async(images_of)("m/a")
    assert after.pk == image_a.pk and after.restored_count == 1
    assert after.status == ImageStatus.READY  # room was not made by deleting a's image

    # Back to b with room again: b cold-starts (it had no image) and a is checkpointed.
    ok(await switch(setup.ports, setup.actions, setup.b, setup.a), BringUpKind.COLD_START)
    setup.track(setup.b)
