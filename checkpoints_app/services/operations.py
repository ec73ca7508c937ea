"""Build an image of a model, or restore one, as worker operations (llmux 0.6's commands).

Both go through the switch queue like any other lifecycle operation, so they take the
GPU group's lease, drain what is in flight, and land in the swap history; a running
worker (`llmux serve` or `llmux worker`) carries them out and reports progress.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.utils import timezone

from checkpoints_app.models import CheckpointImage, ImageStatus
from checkpoints_app.services.store import DbImageStore
from llmux_site.core.policy import EvictionPolicy, ProcessAction, WeightsAction
from models_app.models import (
    OPEN_SWITCH_STATUSES,
    EngineState,
    ModelDefinition,
    RegistryConfig,
    SwapEvent,
    SwapTrigger,
    SwitchRequest,
    SwitchStatus,
)
from models_app.services import control
from models_app.services.engines import eviction_policy
from models_app.services.runtime import engine_target, runtime_for

POLL = 0.2


class OperationError(Exception):
    """The operation could not be done; the message says why and what to do."""


@dataclass(frozen=True)
class Finished:
    request: SwitchRequest
    swap: SwapEvent | None


def wait_for(request: SwitchRequest, timeout: float, what: str) -> Finished:
    """Wait until a worker has finished `request`; raise with its error if it failed."""
    deadline = time.monotonic() + timeout
    while request.status in OPEN_SWITCH_STATUSES:
        if time.monotonic() > deadline:
            hint = " Is a worker running (`llmux serve` or `llmux worker`)?"
            raise OperationError(
                f"{what} is still {request.status} after {timeout:.0f} s."
                + (hint if request.status == SwitchStatus.PENDING else "")
            )
        time.sleep(POLL)
        request.refresh_from_db()
    swap = SwapEvent.objects.filter(pk=request.swap_id).first() if request.swap_id else None
    if request.status == SwitchStatus.FAILED:
        raise OperationError(f"{what} failed: {request.error}")
    return Finished(request, swap)


def build_image(
    model: ModelDefinition,
    *,
    weights: WeightsAction | None = None,
    timeout: float = 3600.0,
    actor: str = "",
) -> CheckpointImage:
    """Bring `model` up (cold start or any bring-up) and probe it, then evict it by
    checkpoint with `weights` first (default: its own weights action): a ready image."""
    started = timezone.now()
    up = control.force_switch(model, actor=actor, trigger=SwapTrigger.API)
    wait_for(up, timeout, f"bringing {model.name} up")
    weights = weights or eviction_policy(model, RegistryConfig.load()).weights
    policy = EvictionPolicy(weights, ProcessAction.CHECKPOINT)
    down = control.evict(model, policy, actor=actor, trigger=SwapTrigger.API)
    done = wait_for(down, timeout, f"checkpointing {model.name}")
    image = (
        CheckpointImage.objects.filter(model_name=model.name, created_at__gte=started)
        .order_by("-created_at", "-id")
        .first()
    )
    if image is None or image.status != ImageStatus.READY:
        why = (done.swap.error if done.swap else "") or (image.error if image else "")
        raise OperationError(
            f"no image of {model.name} was written"
            + (f": {why}" if why else " (the engine was not running any more)")
        )
    return image


def has_usable_image(model: ModelDefinition) -> bool:
    """Whether a bring-up of `model` would restore an image: a ready one made from its
    current launch settings, or its checkpoint_path."""
    return DbImageStore().latest(engine_target(model, RegistryConfig.load())) is not None


def restore(model: ModelDefinition, *, timeout: float = 3600.0, actor: str = "") -> Finished:
    """Restore `model` from its newest usable image and leave it running."""
    state = runtime_for(model).state
    if state in (EngineState.RUNNING, EngineState.STARTING, EngineState.DRAINING):
        raise OperationError(f"{model.name} is {state}: there is nothing to restore")
    if not has_usable_image(model):
        raise OperationError(
            f"{model.name} has no usable checkpoint image (none ready, made from its current "
            "launch settings); build one with `manage.py llmux_checkpoint "
            f"{model.name}`"
        )
    finished = wait_for(
        control.force_switch(model, actor=actor, trigger=SwapTrigger.API),
        timeout,
        f"restoring {model.name}",
    )
    bringup = finished.swap.bringup if finished.swap else ""
    if bringup != "restore":
        why = finished.swap.error if finished.swap else ""
        raise OperationError(
            f"{model.name} is running, but by {bringup or 'no bring-up'}, not a restore"
            + (f": {why}" if why else "")
        )
    return finished
