"""From a claimed switch request and the database to the core's `SwitchPlan`."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Q

from llmux_site.core.eviction_policy import EvictionPolicy, ProcessAction, WeightsAction
from llmux_site.core.switching import SwitchPlan
from models_app.models import (
    EngineRuntime,
    EngineState,
    ModelDefinition,
    OperationKind,
    RegistryConfig,
    SwapTrigger,
    SwitchRequest,
)
from models_app.services.runtime import engine_target

FAILURE_BACKOFF = timedelta(seconds=2)
# A state read ahead of its switch request (see `read_switch_state`) is used only this soon.
READ_AHEAD_MAX_AGE = 1.0


@dataclass(frozen=True)
class SwitchState:
    """What a switch to `target` reads from the database before it starts."""

    config: RegistryConfig
    target: ModelDefinition
    own: EngineRuntime | None  # the target's runtime row (None: it never ran)
    outgoing: EngineRuntime | None  # the group's other awake engine, if any
    read_at: float  # monotonic

    def is_fresh(self) -> bool:
        return time.monotonic() - self.read_at < READ_AHEAD_MAX_AGE

    def fresh_for(self, request: SwitchRequest) -> bool:
        return (
            request.kind == OperationKind.SWITCH
            and request.target_id == self.target.pk
            and self.is_fresh()
        )


def read_switch_state(group: str, target_pk: int) -> SwitchState:
    """Settings, the target and the group's runtimes: three reads.

    A lingering group task calls it as soon as a web process announces demand, while
    that process is still writing the switch request: nothing but the lease holder
    changes a group's engine states between its switches, so the state read ahead is
    the state the switch starts from.
    """
    config = RegistryConfig.load()
    runtimes = EngineRuntime.objects.filter(
        Q(model_id=target_pk) | Q(gpu_group=group, state__in=EngineState.awake())
    ).select_related("model")
    own = outgoing = None
    for runtime in runtimes:
        if runtime.model_id == target_pk:
            own = runtime
        elif outgoing is None:
            outgoing = runtime
    target = own.model if own is not None else ModelDefinition.objects.get(pk=target_pk)
    return SwitchState(config, target, own, outgoing, time.monotonic())


@dataclass(frozen=True)
class PlannedSwitch:
    plan: SwitchPlan
    models: list[ModelDefinition]
    drain_tokens: dict[str, int]  # the current drain token of each engine involved


def build_eviction_plan(request: SwitchRequest, config: RegistryConfig) -> SwitchPlan:
    """An eviction of the request's target, by the request's policy or the model's."""
    target = engine_target(request.target, config)
    if request.weights:
        policy = EvictionPolicy(WeightsAction(request.weights), ProcessAction(request.process))
        target = dataclasses.replace(target, eviction=policy)
    return SwitchPlan(
        group=request.group,
        incoming=target,
        outgoing=target,
        drain_before_switch=config.drain_before_switch,
        force=True,
        skip_if_unwanted=False,
    )


def build_plan(
    request: SwitchRequest,
    config: RegistryConfig,
    failed_at: datetime | None,
    state: SwitchState | None = None,
) -> PlannedSwitch:
    """The plan of `request`, the models it involves and their drain tokens.

    `state`, read ahead for this request's target, saves the reads (and its settings are
    the ones used).
    """
    if request.kind == OperationKind.EVICT:
        return PlannedSwitch(build_eviction_plan(request, config), [request.target], {})
    if state is None or not state.fresh_for(request):
        state = read_switch_state(request.group, request.target_id)
    config, target, own, outgoing = state.config, state.target, state.own, state.outgoing
    request.target = target  # the row read with the state, instead of a lazy load
    backoff_until = (failed_at + FAILURE_BACKOFF).timestamp() if failed_at else None
    plan = SwitchPlan(
        group=request.group,
        incoming=engine_target(target, config, own),
        outgoing=engine_target(outgoing.model, config, outgoing) if outgoing else None,
        min_active_secs=float(config.min_active_secs),
        drain_before_switch=config.drain_before_switch,
        backoff_until=backoff_until,
        force=request.force,
        skip_if_unwanted=request.trigger == SwapTrigger.REQUEST,
    )
    involved = [runtime for runtime in (own, outgoing) if runtime is not None]
    return PlannedSwitch(
        plan,
        [target] + ([outgoing.model] if outgoing else []),
        {runtime.model.name: runtime.drain_token for runtime in involved},
    )
