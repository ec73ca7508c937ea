"""Which operator actions apply to a model now, and why the others do not.

The dashboard disables an action that cannot apply and shows the reason; the actions
themselves (services.operator_actions) still refuse what is wrong whatever a page offered.
Pure: it decides from the state it is given.
"""

from __future__ import annotations

from typing import NamedTuple

from models_app.models import EngineState

CHECKPOINTABLE = frozenset({EngineState.RUNNING, EngineState.SLEEPING, EngineState.SUSPENDED})
DOWN = frozenset({EngineState.NOT_STARTED, EngineState.STOPPED})


class ModelFacts(NamedTuple):
    """What the decision needs to know of one model and of the host."""

    name: str
    state: str
    pinned: bool
    restorable: bool
    criu: bool  # this host can checkpoint (CRIU found and not turned off)


def blocked_actions(facts: ModelFacts) -> dict[str, str]:
    """{action: why it cannot apply now}; an action not named may be offered."""
    name, state = facts.name, EngineState(facts.state)
    label = state.label.lower()
    blocked: dict[str, str] = {}
    if state == EngineState.RUNNING:
        blocked["switch"] = f"{name} is running already"
    if state in EngineState.awake():
        blocked["wake"] = f"{name} is {label} already"
        blocked["restore"] = f"{name} is {label}: there is nothing to restore"
    elif not facts.restorable:
        blocked["restore"] = f"{name} has no usable checkpoint image"
    if state in DOWN:
        blocked["stop"] = f"{name} is {label}: there is no engine to stop"
    if state not in EngineState.with_process():
        blocked["evict"] = f"{name} is {label}: there is no engine to evict"
    if not facts.criu:
        blocked["checkpoint"] = "CRIU is not available on this host"
    elif state not in CHECKPOINTABLE:
        blocked["checkpoint"] = f"{name} is {label}: bring it up first"
    if facts.pinned:
        blocked["pin"] = f"{name} is pinned already"
    return blocked
