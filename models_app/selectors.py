"""Read-side queries shared by pages and the API (no writes here)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from django.db.models import Count, Max, Q, QuerySet

from llmux_site.core.gpu import gpu_groups
from llmux_site.gateway.backend import Route
from models_app.models import (
    OPEN_SWITCH_STATUSES,
    EngineRuntime,
    EngineState,
    ModelAlias,
    ModelDefinition,
    OperationKind,
    RegistryConfig,
    SwapEvent,
    SwitchRequest,
)
from models_app.protocol import CommittedState
from models_app.services.engines import listen_address


@dataclass(frozen=True)
class GatewayModel:
    """What the gateway needs to route one model."""

    name: str
    pk: int
    route: Route  # built once per registry load, handed to every request
    enabled: bool
    max_model_len: int | None
    group: str  # its GPU group (gpu_group)
    created: int = 0  # when it was defined (Unix seconds): `/v1/models`' `created`


@dataclass(frozen=True)
class GatewayRegistry:
    models: dict[str, GatewayModel]
    names: dict[str, str]  # name or alias -> model name
    mode: str
    pinned: str | None
    request_timeout: float
    fingerprint: tuple[object, ...]


def registry_fingerprint() -> tuple[object, ...]:
    """Changes whenever a model, alias or the registry settings change."""
    models = ModelDefinition.objects.aggregate(n=Count("id"), at=Max("updated_at"))
    aliases = ModelAlias.objects.aggregate(n=Count("id"), top=Max("id"))
    config = RegistryConfig.objects.values_list("updated_at", flat=True).first()
    return (models["n"], models["at"], aliases["n"], aliases["top"], config)


def gpu_group(model: ModelDefinition, enabled: Mapping[str, Sequence[int]] | None = None) -> str:
    """The GPU group of `model`, the one place llmux computes it: models on intersecting GPU
    sets share one, among the enabled models (`enabled`: their GPU ids, when already read);
    a disabled model is placed as if it were enabled."""
    placed = dict(_enabled_gpu_ids() if enabled is None else enabled)
    placed[model.name] = model.gpu_ids
    return gpu_groups(placed)[model.name]


def _enabled_gpu_ids() -> dict[str, list[int]]:
    return dict(ModelDefinition.objects.filter(enabled=True).values_list("name", "gpu_ids"))


def gateway_registry() -> GatewayRegistry:
    fingerprint = registry_fingerprint()
    config = RegistryConfig.current()
    models: dict[str, GatewayModel] = {}
    names: dict[str, str] = {}
    definitions = list(ModelDefinition.objects.prefetch_related("aliases"))
    enabled = {m.name: m.gpu_ids for m in definitions if m.enabled}
    groups = gpu_groups(enabled)  # once for the enabled; gpu_group places each disabled one
    for model in definitions:
        route = Route(
            model=model.name,
            upstream=listen_address(model),
            served_name=model.served_model_name or model.model_path,
            rewrite_model=model.rewrite_model,
        )
        models[model.name] = GatewayModel(
            name=model.name,
            pk=model.pk,
            route=route,
            enabled=model.enabled,
            max_model_len=_max_model_len(model.extra_args),
            group=groups[model.name] if model.enabled else gpu_group(model, enabled),
            created=int(model.created_at.timestamp()),
        )
        names[model.name] = model.name
        for alias in model.aliases.all():
            names[alias.name] = model.name
    pinned = config.pinned_model.name if config.pinned_model_id and config.pinned_model else None
    return GatewayRegistry(
        models=models,
        names=names,
        mode=config.mode,
        pinned=pinned,
        request_timeout=float(config.request_timeout_secs),
        fingerprint=fingerprint,
    )


def runtime_states() -> dict[str, CommittedState]:
    """Model name -> its committed state, drain token and row version, for every model
    with a runtime row (the shape the bus carries them in, so both merge alike)."""
    rows = EngineRuntime.objects.values_list("model__name", "state", "drain_token", "version")
    return {name: CommittedState(state, token, version) for name, state, token, version in rows}


class OperationOutcome(NamedTuple):
    """Where a queued switch or eviction stands (a SwitchRequest row)."""

    status: str  # a SwitchStatus value
    error: str


def switch_outcomes(ids: list[int]) -> dict[int, OperationOutcome]:
    rows = SwitchRequest.objects.filter(pk__in=ids).values_list("pk", "status", "error")
    return {pk: OperationOutcome(status, error) for pk, status, error in rows}


def bring_up_under_way(model_pk: int) -> bool:
    """Whether an operator's switch to the model is queued or running, or its engine is
    up or starting: what a request waits for in manual mode, where it never queues one."""
    switching = SwitchRequest.objects.filter(
        target_id=model_pk, kind=OperationKind.SWITCH, status__in=OPEN_SWITCH_STATUSES
    )
    starting = EngineRuntime.objects.filter(
        model_id=model_pk, state__in=(EngineState.STARTING, EngineState.RUNNING)
    )
    return switching.exists() or starting.exists()


def engine_state(model: ModelDefinition) -> str:
    """`model`'s engine state; not_started where it never had a runtime row (a read path
    never creates one: services.runtime.runtime_for does, for writers)."""
    state = EngineRuntime.objects.filter(model=model).values_list("state", flat=True).first()
    return state if state is not None else EngineState.NOT_STARTED.value


def engine_runtime(model: ModelDefinition) -> EngineRuntime:
    """`model`'s runtime row, or an unsaved one with the defaults where it never had one (a
    read path never creates one: services.runtime.runtime_for does, for writers)."""
    stored = EngineRuntime.objects.filter(model=model).first()
    return stored if stored is not None else EngineRuntime(model=model)


def _max_model_len(extra_args: list[str]) -> int | None:
    for flag, value in itertools.pairwise(extra_args):
        if flag == "--max-model-len" and value.isdigit():
            return int(value)
    return None


def swap_history(
    *,
    model: str = "",
    outcome: str = "",
    trigger: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[SwapEvent]:
    """Swaps newest first, filtered as the dashboard and the API offer (blank: any);
    `model` matches either side of a switch."""
    rows = SwapEvent.objects.all()
    if model:
        rows = rows.filter(Q(to_name=model) | Q(from_name=model))
    if outcome:
        rows = rows.filter(outcome=outcome)
    if trigger:
        rows = rows.filter(trigger=trigger)
    if since:
        rows = rows.filter(started_at__gte=since)
    if until:
        rows = rows.filter(started_at__lt=until)
    return rows.order_by("-started_at", "-id")
