"""Runtime state of engines: the only writer of EngineRuntime rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone

from llmux_site.core.eviction_policy import EvictionPolicy, ProcessAction, WeightsAction
from llmux_site.core.processes import EngineProcess
from llmux_site.core.readiness import readiness_probe
from llmux_site.core.switching import EngineChange, EngineStatus, EngineTarget
from models_app import protocol
from models_app.models import EngineRuntime, EngineState, ModelDefinition, RegistryConfig
from models_app.protocol import CommittedState
from models_app.services.engines import (
    eviction_policy,
    listen_address,
    process_spec,
    remove_engine_files,
)

# States in which the engine holds (or is about to hold) its GPU group.


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
    record_changes([(model, EngineChange(model.name, status, process, evicted, error))], group)


def record_changes(
    changes: Sequence[tuple[ModelDefinition, EngineChange]], group: str = ""
) -> dict[str, int]:
    """Persist several engines' new states in one transaction (one commit, one notice).

    Joins the caller's transaction without a savepoint (a savepoint is two more round
    trips on the switch path, and a failure here fails the caller's write anyway). The
    notice carries each state with its row version, so web processes can tell a late
    notice from a newer read of the table.
    """
    with transaction.atomic(savepoint=False):
        states = {}
        for model, change in changes:
            version, token = _write_status(model, change, group)
            states[model.name] = CommittedState(change.status.value, token, version)
        protocol.after_commit(protocol.EngineStates(states))
    return {name: state.version for name, state in states.items()}


def begin_drain(
    model: ModelDefinition,
    process: EngineProcess | None,
    group: str = "",
    *,
    current_token: int | None = None,
) -> int:
    """Mark `model` draining with a new drain token; returns the token web processes ack.

    `current_token` (the token the caller read under the group lease, which only a lease
    holder raises) is raised by one; without it the row's own token is.
    """
    with transaction.atomic(savepoint=False):
        change = EngineChange(model.name, EngineStatus.DRAINING, process)
        new_token = None if current_token is None else current_token + 1
        version, token = _write_status(model, change, group, new_token=new_token)
        state = CommittedState(EngineStatus.DRAINING.value, token, version)
        protocol.after_commit(protocol.EngineStates({model.name: state}))
        return token


def record_death(runtime: EngineRuntime, error: str) -> bool:
    """Record `runtime`'s engine failed, unless its row changed since it was read.

    The check that found the process gone read the row first: a switch that stopped the
    engine on purpose meanwhile wrote `stopped` (a new version), and that is the truth,
    not a death. Returns whether the failure was recorded.
    """
    change = EngineChange(runtime.model.name, EngineStatus.FAILED, None, None, error)
    with transaction.atomic(savepoint=False):
        values, raised = _status_values(change, "")
        written = update_returning(values, raised, runtime.model.pk, runtime.version)
        if written is None:  # someone wrote the row since it was read
            return False
        version, token = written
        state = CommittedState(EngineStatus.FAILED.value, token, version)
        protocol.after_commit(protocol.EngineStates({runtime.model.name: state}))
    return True


def _write_status(
    model: ModelDefinition,
    change: EngineChange,
    group: str,
    *,
    new_token: int | None = None,
) -> tuple[int, int]:
    """One UPDATE of the engine's row; its new (version, drain token).

    The row is created first if the engine never had one.
    """
    values, raised = _status_values(change, group, new_token=new_token)
    written = update_returning(values, raised, model.pk)
    if written is None:  # first write for this engine
        runtime_for(model)
        written = update_returning(values, raised, model.pk)
    assert written is not None
    return written


def _status_values(
    change: EngineChange, group: str, *, new_token: int | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The columns that record `change` (set to a value, or raised by one)."""
    status, process, evicted = change.status, change.process, change.evicted
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    values: dict[str, Any] = {
        "state": status.value,
        "state_changed_at": now,
        "pid": process.pid if process else None,
        "create_time": process.create_time if process else None,
        "pgid": process.pgid if process else None,
        "evicted_weights": evicted.weights.value if evicted else "",
        "evicted_process": evicted.process.value if evicted else "",
    }
    raised = ["version"]
    if group:
        values["gpu_group"] = group
    if status is EngineStatus.RUNNING:
        values |= {"activated_at": now, "last_error": "", "consecutive_failures": 0}
    elif status is EngineStatus.STARTING and process is not None:
        values["started_at"] = now
    elif status is EngineStatus.FAILED:
        values["last_error"] = change.error
        raised.append("consecutive_failures")
    if new_token is not None:
        values["drain_token"] = new_token
    elif status is EngineStatus.DRAINING:
        raised.append("drain_token")
    return values, raised


def update_returning(
    values: dict[str, Any], raised: list[str], pk: int, expect_version: int | None = None
) -> tuple[int, int] | None:
    """UPDATE one EngineRuntime row in raw SQL with RETURNING: its new (version, drain
    token), or None when no row matched (with `expect_version`, only a row at that version).

    Why raw SQL: the ORM's update() can neither return the new version nor skip its query
    compilation, and an engine state write runs about three times on every switch, on the
    path web processes wait on. docs/PERFORMANCE.md, "Switch orchestration
    overhead": 50.3 ms p50 (embedded) and 53.2 ms p50 (redis, target <= 50 ms, missed by
    3.2 ms) with these writes one round trip each; a read-back of the version would add one
    per write. Needs RETURNING (PostgreSQL, SQLite >= 3.35).
    """
    meta = EngineRuntime._meta
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        field = meta.get_field(name)
        assert isinstance(field, models.Field) and field.column
        return quote(field.column)

    assignments = [f"{column(name)} = %s" for name in values]
    assignments += [f"{column(name)} = {column(name)} + 1" for name in raised]
    # Identifiers come from the model's own metadata; every value is a parameter.
    where, params = f"{column('model')} = %s", [*values.values(), pk]
    if expect_version is not None:
        where, params = f"{where} AND {column('version')} = %s", [*params, expect_version]
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)} "  # noqa: S608
        f"WHERE {where} RETURNING {column('version')}, {column('drain_token')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


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


def startup_timeout_secs(model: ModelDefinition, config: RegistryConfig) -> int:
    """The model's own cold-start limit, else the registry's (llmux's top-level key)."""
    if model.startup_timeout_secs is not None:
        return model.startup_timeout_secs
    return config.startup_timeout_secs


def engine_target(
    model: ModelDefinition, config: RegistryConfig, runtime: EngineRuntime | None = None
) -> EngineTarget:
    """What the core switcher needs to know about `model`'s engine, from the database."""
    runtime = runtime or runtime_for(model)
    # The engine starts ready for the eviction it will get (vLLM's sleep flag follows it).
    eviction = override_policy(runtime) or eviction_policy(model, config)
    return EngineTarget(
        name=model.name,
        address=listen_address(model),
        served_name=model.served_model_name or model.model_path,
        spec=process_spec(model, config, eviction),
        eviction=eviction,
        status=EngineStatus(runtime.state),
        process=current_process(runtime),
        evicted=evicted_policy(runtime),
        activated_at=runtime.activated_at.timestamp() if runtime.activated_at else None,
        startup_timeout=float(startup_timeout_secs(model, config)),
        drain_timeout=float(model.drain_timeout_secs),
        gpu_ids=tuple(model.gpu_ids),
        checkpoint_path=model.checkpoint_path or None,
        readiness=readiness_probe(
            model.probe, engine=model.engine_kind, extra_args=list(model.extra_args)
        ),
    )


def stop_all_engines(*, grace: float = 10.0) -> list[str]:
    """Stop every engine this host recorded (used when `llmux serve` exits)."""
    from llmux_site.core import processes, supervisor

    stopped = []
    live = EngineRuntime.objects.exclude(pid=None).select_related("model")
    for runtime in live:
        process = None
        if runtime.pid is not None and runtime.create_time is not None:
            process = processes.adopt(runtime.pid, runtime.create_time, runtime.pgid or runtime.pid)
        if process is not None:
            supervisor.stop(process, grace=grace)
            stopped.append(runtime.model.name)
        if runtime.state != EngineState.CHECKPOINTED:  # its image needs them
            remove_engine_files(runtime.model)
        record_engine_status(runtime.model, EngineStatus.STOPPED, process=None, evicted=None)
    return stopped
