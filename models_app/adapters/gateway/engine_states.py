"""The engine states a web process holds ahead of its requests, from bus notices and polls."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from models_app.models import EngineState
from models_app.protocol import CommittedState


class CachedState(NamedTuple):
    """What the gateway keeps of one engine's row."""

    state: str  # an EngineState value
    drain_token: int  # the drain a worker raised last: acknowledged once nothing is in flight


NEVER_STARTED = CachedState(EngineState.NOT_STARTED, 0)


class Merged(NamedTuple):
    """What a merge did: whether a state changed, and the state of every row it took."""

    changed: bool
    taken: dict[str, str]  # model -> its state, for rows at least as new as the cache's


@dataclass
class EngineStateCache:
    """Engine states and drain tokens by model, each with the row version it came from."""

    # Replaced, never changed in place: a snapshot taken for a database thread stays whole.
    states: dict[str, CachedState] = field(default_factory=dict)
    # Row version of each cached state: a bus notice or a read older than what the cache
    # holds is ignored (notices and reads can arrive in either order).
    versions: dict[str, int] = field(default_factory=dict)
    probing: dict[str, int] = field(default_factory=dict)  # model -> version being probed

    def state_of(self, model: str) -> str:
        return self.states.get(model, NEVER_STARTED).state

    def drain_token(self, model: str) -> int:
        return self.states.get(model, NEVER_STARTED).drain_token

    def admits(self, model: str) -> bool:
        """Whether a request for `model` may go now, answered from this cache alone.

        Why a cache kept ahead of the requests (pushed on the bus, polled as a fallback)
        rather than a read per request: the gateway adds 1.3 ms p50 to a request against a
        2 ms target (docs/PERFORMANCE.md, Gateway, "1 client added p50"), and one ORM
        statement costs 0.6 to 0.9 ms on these machines (docs/SWITCHING.md).
        """
        return self.state_of(model) == EngineState.RUNNING

    def admits_early(self, model: str) -> bool:
        """Whether `model`'s engine is being probed, by the start the cache knows of: the
        requests that waited for it may be sent beside the probe (early slots).

        Why: the readiness probe and a woken request's first token (20 ms each) then run
        at the same time, not one after the other: the switch overhead is 50.3 ms p50
        (docs/PERFORMANCE.md, Switch orchestration overhead, embedded) with readiness at
        24.2 ms of it; in turn, the request's own first token would add about 20 ms more.
        """
        return self.state_of(model) == EngineState.STARTING and self.probing.get(
            model, -1
        ) == self.versions.get(model)

    def probing_started(self, model: str, version: int) -> None:
        """The worker's `Probing` notice: the start at row `version` answers /health."""
        self.probing[model] = version

    def mark_failed(self, model: str) -> None:
        """The engine was found dead (and recorded so): its drain token stays."""
        self.states = {
            **self.states,
            model: CachedState(EngineState.FAILED, self.drain_token(model)),
        }

    def merge(self, rows: Mapping[str, CommittedState]) -> Merged:
        """Cache every row at least as new as the cached one."""
        states = dict(self.states)
        taken: dict[str, str] = {}
        for name, (state, token, version) in rows.items():
            if version >= self.versions.get(name, -1):
                self.versions[name] = version
                states[name] = CachedState(state, token)
                taken[name] = state
        changed = states != self.states
        self.states = states
        return Merged(changed, taken)
