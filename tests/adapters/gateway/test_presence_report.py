"""Presence reports are coalesced: written when something changed or a heartbeat is due."""

from __future__ import annotations

import asyncio

from models_app.adapters.gateway.engine_states import EngineStateCache
from models_app.adapters.gateway.presence_report import HEARTBEAT, PresenceReport
from models_app.adapters.gateway.registry_cache import RegistryCache
from models_app.protocol import CommittedState


class NoDemand:
    def waiting(self) -> dict[str, tuple[int, float]]:
        return {}

    def in_flight_of(self, model: str) -> int:
        return 0

    def in_flight_counts(self) -> dict[str, int]:
        return {}


def reporter() -> PresenceReport:
    return PresenceReport("web-1", EngineStateCache(), RegistryCache(), asyncio.Event())


def test_a_row_is_written_only_when_something_changed_or_a_heartbeat_is_due() -> None:
    presence = reporter()
    assert presence.report_due(100.0)  # a fresh process reports at once
    presence.snapshot(NoDemand())

    assert not presence.report_due(100.0 + HEARTBEAT / 2)
    presence.mark_dirty()
    assert presence.wake_refresher.is_set()
    assert presence.report_due(100.0 + HEARTBEAT / 2)
    presence.snapshot(NoDemand())
    assert presence.report_due(100.0 + HEARTBEAT * 2)


def test_a_snapshot_acknowledges_the_drains_with_nothing_in_flight() -> None:
    presence = reporter()
    presence.states.merge({"alpha": CommittedState("draining", 3, 1)})

    snapshot = presence.snapshot(NoDemand())

    assert snapshot.drained == {"alpha": 3}
    assert presence.pending_drains(NoDemand()) == []
