"""Build an image of a model, or restore one, as worker operations (llmux 0.6's commands).

Both go through the switch queue like any other lifecycle operation, so they take the
GPU group's lease, drain what is in flight, and land in the swap history; a running
worker (`llmux serve` or `llmux worker`) carries them out and reports progress.
"""

from __future__ import annotations

from django.utils import timezone

from checkpoints_app.models import CheckpointImage, ImageStatus
from checkpoints_app.services.store import newest_usable_image
from llmux_site.core.eviction_policy import EvictionPolicy, ProcessAction, WeightsAction
from models_app import selectors
from models_app.models import EngineState, ModelDefinition, RegistryConfig, SwapTrigger
from models_app.services import control
from models_app.services.engines import eviction_policy
from models_app.services.runtime import engine_target
from models_app.services.waiting import Finished, OperationError, wait_for


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
    current launch settings, or its checkpoint_path. A read: it inserts no row."""
    target = engine_target(model, RegistryConfig.current(), selectors.engine_runtime(model))
    return newest_usable_image(target) is not None


def restore(model: ModelDefinition, *, timeout: float = 3600.0, actor: str = "") -> Finished:
    """Restore `model` from its newest usable image and leave it running."""
    state = selectors.engine_state(model)
    if state in EngineState.awake():
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
