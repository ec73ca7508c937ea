"""Runtime state of engines: the only writer of EngineRuntime rows."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from llmux_site.core.policy import EvictionPolicy, ProcessAction, WeightsAction
from llmux_site.core.processes import EngineProcess
from llmux_site.core.switching import EngineStatus, EngineTarget
from models_app.models import EngineRuntime, EngineState, ModelDefinition, RegistryConfig
from models_app.services import notify
from models_app.services.engines import eviction_policy, listen_address, process_spec

# States in which the engine holds (or is about to hold) its GPU group.
AWAKE_STATES = (EngineState.STARTING, EngineState.RUNNING, EngineState.DRAINING)


def runtime_for(model: ModelDefinition) -> EngineRuntime:
    runtime, _ = EngineRuntime.objects.get_or_create(model=model)
    return runtime


def record_engine_status(
    model: ModelDefinition,
    status: EngineStatus,
    *,
    process: EngineProcess | None,
    evicted: EvictionPolicy | None,
    error: str = "",
    group: str = "",
) -> None:
    """Persist an engine's new state, identity and eviction; bump the CAS version."""
    now = timezone.now()
    fields: dict[str, object] = {
        "state": status.value,
        "state_changed_at": now,
        "pid": process.pid if process else None,
        "create_time": process.create_time if process else None,
        "pgid": process.pgid if process else None,
        "evicted_weights": evicted.weights.value if evicted else "",
        "evicted_process": evicted.process.value if evicted else "",
        "version": F("version") + 1,
    }
    if group:
        fields["gpu_group"] = group
    if status is EngineStatus.RUNNING:
        fields |= {"activated_at": now, "last_error": "", "consecutive_failures": 0}
    elif status is EngineStatus.STARTING and process is not None:
        fields["started_at"] = now
    elif status is EngineStatus.FAILED:
        fields |= {"last_error": error, "consecutive_failures": F("consecutive_failures") + 1}
    with transaction.atomic():
        runtime_for(model)
        EngineRuntime.objects.filter(pk=model.pk).update(**fields)
        notify.after_commit(notify.RUNTIME)


def raise_drain(model: ModelDefinition) -> int:
    """Start a drain of `model`: web processes stop admitting and acknowledge the token."""
    with transaction.atomic():
        runtime_for(model)
        EngineRuntime.objects.filter(pk=model.pk).update(
            drain_token=F("drain_token") + 1, version=F("version") + 1
        )
        notify.after_commit(notify.RUNTIME)
        return EngineRuntime.objects.values_list("drain_token", flat=True).get(pk=model.pk)


def current_process(runtime: EngineRuntime) -> EngineProcess | None:
    if runtime.pid is None or runtime.create_time is None:
        return None
    return EngineProcess(
        pid=runtime.pid, create_time=runtime.create_time, pgid=runtime.pgid or runtime.pid
    )


def evicted_policy(runtime: EngineRuntime) -> EvictionPolicy | None:
    if not runtime.evicted_weights:
        return None
    return EvictionPolicy(
        WeightsAction(runtime.evicted_weights), ProcessAction(runtime.evicted_process)
    )


def override_policy(runtime: EngineRuntime) -> EvictionPolicy | None:
    """The operator's runtime eviction override, if one is set."""
    if not runtime.override_weights:
        return None
    return EvictionPolicy(
        WeightsAction(runtime.override_weights), ProcessAction(runtime.override_process)
    )


def engine_target(model: ModelDefinition, config: RegistryConfig) -> EngineTarget:
    """What the core switcher needs to know about `model`'s engine, from the database."""
    runtime = runtime_for(model)
    return EngineTarget(
        name=model.name,
        address=listen_address(model),
        served_name=model.served_model_name or model.model_path,
        spec=process_spec(model, config),
        eviction=override_policy(runtime) or eviction_policy(model, config),
        status=EngineStatus(runtime.state),
        process=current_process(runtime),
        evicted=evicted_policy(runtime),
        activated_at=runtime.activated_at.timestamp() if runtime.activated_at else None,
        startup_timeout=float(model.startup_timeout_secs),
        drain_timeout=float(model.drain_timeout_secs),
        gpu_ids=tuple(model.gpu_ids),
    )


def stop_all_engines(*, grace: float = 10.0) -> list[str]:
    """Stop every engine this host recorded (used when `llmux serve` exits)."""
    from llmux_site.core import supervisor

    stopped = []
    live = EngineRuntime.objects.exclude(pid=None).select_related("model")
    for runtime in live:
        process = None
        if runtime.pid is not None and runtime.create_time is not None:
            process = supervisor.adopt(
                runtime.pid, runtime.create_time, runtime.pgid or runtime.pid
            )
        if process is not None:
            supervisor.stop(process, grace=grace)
            stopped.append(runtime.model.name)
        record_engine_status(runtime.model, EngineStatus.STOPPED, process=None, evicted=None)
    return stopped
