"""Operator actions on engines and the serving mode, shared by the REST API and the dashboard.

One `do_…` per use case: it validates, carries the action out through the control
service, and is audited (services.acting), a refusal too. Lifecycle actions are queued: a
worker carries them out and the swap history shows them; the audit entry says what was
asked and whether it was accepted. `wait_for_group=False` (the REST API) refuses a
lifecycle action with GroupBusy while another operation runs on the model's GPU group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from llmux_site.core.eviction_policy import EvictionPolicy, PolicyError, ProcessAction
from models_app import image_port
from models_app.models import (
    AuditResult,
    Mode,
    ModelDefinition,
    RegistryConfig,
    SwapTrigger,
    SwitchRequest,
    SwitchStatus,
)
from models_app.offered_actions import CHECKPOINTABLE
from models_app.selectors import engine_state, gpu_group
from models_app.services import control
from models_app.services.acting import (
    Acting,
    ActionError,
    Outcome,
    StateError,
    audited,
    model_named,
)
from models_app.services.engines import eviction_policy


class GroupBusy(StateError):
    """Another operation runs on the model's GPU group (refused where the caller asks)."""


def _queued(request: SwitchRequest, what: str) -> Outcome:
    return Outcome(f"{what}: queued as operation {request.pk}", AuditResult.QUEUED, request.pk)


def _policy(weights: str, process: str) -> EvictionPolicy:
    try:
        return EvictionPolicy.parse(weights, process)
    except PolicyError as exc:
        raise ActionError(str(exc)) from None


def refuse_if_group_busy(name: str) -> None:
    """GroupBusy while an operation on another model runs on `name`'s GPU group.

    The REST API refuses a lifecycle action then (automation retries; docs/API.md), before
    anything is attempted or recorded; the dashboard queues it behind the running one.
    """
    model = ModelDefinition.objects.filter(name=name).first()
    if model is None:
        return  # the action itself reports the unknown name
    running = (
        SwitchRequest.objects.filter(group=gpu_group(model), status=SwitchStatus.RUNNING)
        .exclude(target=model)
        .first()
    )
    if running is not None:
        raise GroupBusy(f"operation {running.pk} is running on GPU group {running.group}")


@contextmanager
def _lifecycle(
    acting: Acting, action: str, name: str, wait_for_group: bool
) -> Iterator[Callable[[Outcome], Outcome]]:
    """`audited`, after refusing with GroupBusy unless the caller queues behind a busy group."""
    if not wait_for_group:
        refuse_if_group_busy(name)
    with audited(acting, action, name) as done:
        yield done


Queue = Callable[..., SwitchRequest]  # a control service's action: (model, *, actor, trigger)


def _queue(queue: Queue, acting: Acting, model: ModelDefinition, *args: object) -> SwitchRequest:
    """`queue` the operation on `model` in the acting user's name, from its entry point."""
    return queue(model, *args, actor=acting.name, trigger=SwapTrigger(acting.source))


def _plain(
    queue: Queue, action: str, what: str, name: str, acting: Acting, wait_for_group: bool
) -> Outcome:
    """A lifecycle action that only queues: `what` names it in the outcome ({} the model)."""
    with _lifecycle(acting, action, name, wait_for_group) as done:
        model = model_named(name)
        return done(_queued(_queue(queue, acting, model), what.format(model.name)))


def do_switch(name: str, *, acting: Acting, wait_for_group: bool = True) -> Outcome:
    """Make model `name` active now (no cooldown, even when no request waits)."""
    return _plain(control.force_switch, "switch", "switch to {}", name, acting, wait_for_group)


def do_evict(
    name: str, *, weights: str, process: str, acting: Acting, wait_for_group: bool = True
) -> Outcome:
    """Evict model `name` by the policy `weights`+`process`, bringing nothing else up."""
    with _lifecycle(acting, "evict", name, wait_for_group) as done:
        model = model_named(name)
        policy = _policy(weights, process)
        request = _queue(control.evict, acting, model, policy)
        return done(_queued(request, f"evict {model.name} by {policy.label}"))


def do_wake(name: str, *, acting: Acting, wait_for_group: bool = True) -> Outcome:
    """Bring model `name` up (evicting its group's active model, as any switch does)."""
    return _plain(control.wake, "wake", "wake {}", name, acting, wait_for_group)


def do_stop(name: str, *, acting: Acting, wait_for_group: bool = True) -> Outcome:
    """Stop model `name`'s engine."""
    return _plain(control.stop, "stop", "stop {}", name, acting, wait_for_group)


def do_checkpoint(
    name: str, *, weights: str = "", acting: Acting, wait_for_group: bool = True
) -> Outcome:
    """Evict a running model by checkpoint (its own weights action, or the one chosen)."""
    with _lifecycle(acting, "checkpoint", name, wait_for_group) as done:
        model = model_named(name)
        state = engine_state(model)
        if state not in CHECKPOINTABLE:
            raise StateError(f"{model.name} is {state}: bring it up first, then checkpoint it")
        weights = weights or eviction_policy(model, RegistryConfig.current()).weights.value
        policy = _policy(weights, ProcessAction.CHECKPOINT.value)
        request = _queue(control.evict, acting, model, policy)
        return done(_queued(request, f"checkpoint {model.name} ({policy.label})"))


def do_restore(name: str, *, acting: Acting, wait_for_group: bool = True) -> Outcome:
    """Bring model `name` up from its newest usable checkpoint image."""
    with _lifecycle(acting, "restore", name, wait_for_group) as done:
        model = model_named(name)
        if not image_port.has_usable_image(model):
            raise StateError(f"{model.name} has no usable checkpoint image")
        return done(_queued(_queue(control.force_switch, acting, model), f"restore {model.name}"))


def do_pin(name: str, *, acting: Acting, wait_for_group: bool = True) -> Outcome:
    """Switch to model `name` and stay there (manual mode)."""
    return _plain(control.pin, "pin", "pin {}", name, acting, wait_for_group)


def do_unpin(*, acting: Acting) -> Outcome:
    """Back to auto mode with no pinned model."""
    with audited(acting, "unpin", "") as done:
        control.unpin(actor=acting.name)
        return done(Outcome("unpinned: mode auto"))


def do_set_mode(mode: str, *, acting: Acting) -> Outcome:
    """auto: requests switch models; manual: only the pinned (or active) model is served."""
    with audited(acting, "mode", mode) as done:
        if mode not in Mode.values:
            raise ActionError(f"unknown mode {mode!r}; expected auto or manual")
        control.set_mode(mode, actor=acting.name)
        return done(Outcome(f"mode {mode}"))


def do_delete_image(image_id: str, *, acting: Acting) -> Outcome:
    """Delete a checkpoint image's files (its row stays as history)."""
    with audited(acting, "delete_image", image_id) as done:
        try:
            image = image_port.delete(int(image_id), reason=f"deleted by {acting.name}")
        except (ValueError, image_port.ImageNotFound):
            raise ActionError("no such image") from None
        except image_port.ImageBusy as exc:
            raise StateError(str(exc)) from None
        return done(Outcome(f"image {image.pk} of {image.model_name} deleted"))
