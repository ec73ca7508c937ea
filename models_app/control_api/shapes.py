"""llmux's control-API JSON: its states, modes, levels and policies, spelled as llmux
spells them (Rust's Debug names), from this project's snapshot and runtime rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from llmux_site.core.eviction_policy import SLEEP_LEVELS, EvictionPolicy
from models_app.models import EngineState
from models_app.snapshot import StatusSnapshot

# llmux 0.5's SleepLevel variants, by level.
LEVEL_NAMES = {1: "L1", 2: "L2", 3: "CudaSuspend", 4: "Checkpoint", 5: "Stop"}
EVICTED = (EngineState.SLEEPING, EngineState.SUSPENDED, EngineState.STOPPED)


class EngineRow(NamedTuple):
    """What the control API needs of one engine beyond the status snapshot."""

    state: str
    evicted: EvictionPolicy | None  # how it was evicted, when it is
    error: str


class ModelRow(NamedTuple):
    """One model for the control API: its engine, and the policy it is evicted by now
    (its runtime override, else its own, else the registry's)."""

    engine: EngineRow
    configured: EvictionPolicy


def debug_name(value: str) -> str:
    """`keep_running` as Rust's Debug prints the variant: `KeepRunning`."""
    return "".join(part.capitalize() for part in value.split("_"))


def policy_debug(policy: EvictionPolicy) -> str:
    """llmux's `{:?}` of an EvictionPolicy, as its messages print it."""
    return (
        f"EvictionPolicy {{ weights: {debug_name(policy.weights)}, "
        f"process: {debug_name(policy.process)} }}"
    )


def policy_json(policy: EvictionPolicy) -> dict[str, str]:
    return {"weights": policy.weights.value, "process": policy.process.value}


def process_state(row: EngineRow, *, levels: bool = False) -> str:
    """llmux's process_state; `levels`: a sleeping engine as 0.5 spelled it (`sleeping:L1`),
    where its policy is one of the five levels."""
    if row.state == EngineState.CHECKPOINTED:
        return "checkpointed"
    if row.state == EngineState.FAILED:
        return f"failed:{row.error.splitlines()[0] if row.error else 'unknown'}"
    if row.state in EVICTED and row.evicted is not None:
        level = row.evicted.sleep_level
        if levels and level is not None:
            return f"sleeping:{LEVEL_NAMES[level]}"
        return f"sleeping:{debug_name(row.evicted.weights)}+{debug_name(row.evicted.process)}"
    if row.state in (EngineState.RUNNING, EngineState.DRAINING):
        return "running"
    if row.state == EngineState.STARTING:
        return "starting"
    return "not_started"


def mode_json(mode: str, pinned: str | None) -> dict[str, str]:
    """`{"mode": "auto"}` or `{"mode": "manual", "pinned": m}` (no pin: no key)."""
    return {"mode": mode} | ({"pinned": pinned} if mode == "manual" and pinned else {})


def status_body(snapshot: StatusSnapshot, rows: Mapping[str, ModelRow]) -> dict[str, Any]:
    """`GET /control/status`."""
    running = [m["name"] for m in snapshot["models"] if m["state"] == EngineState.RUNNING]
    active = running[0] if running else None
    switch = snapshot["switch"]
    if switch is not None:
        state = f"switching:{switch['from'] or 'none'}->{switch['to']}"
    else:
        state = f"active:{active}" if active else "idle"
    return {
        "state": state,
        "active_model": active,
        "mode": mode_json(snapshot["mode"], snapshot["pinned"]),
        "models": {
            m["name"]: {
                "in_flight": m["in_flight"],
                "queue_depth": m["queued"],
                "process_state": process_state(rows[m["name"]].engine),
            }
            for m in snapshot["models"]
        },
    }


def level_of(body: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """(level, error) of a request's optional `level` (1-5)."""
    level = body.get("level")
    if level is None:
        return None, None
    if not isinstance(level, int) or isinstance(level, bool) or level not in SLEEP_LEVELS:
        return None, f"Invalid sleep level: {level}. Must be 1-5."
    return level, None
