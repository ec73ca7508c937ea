"""The gateway's engine-state cache: newer rows win, whichever way they arrive."""

from __future__ import annotations

from models_app.adapters.gateway.engine_states import CachedState, EngineStateCache
from models_app.protocol import CommittedState


def test_a_notice_older_than_the_cached_row_is_ignored() -> None:
    cache = EngineStateCache()
    cache.merge({"alpha": CommittedState("running", 3, 7)})

    merged = cache.merge({"alpha": CommittedState("starting", 2, 6)})

    assert merged.changed is False
    assert merged.taken == {}
    assert cache.states["alpha"] == CachedState("running", 3)


def test_a_row_as_new_as_the_cached_one_is_taken_and_reported() -> None:
    cache = EngineStateCache()
    cache.merge({"alpha": CommittedState("starting", 0, 4)})

    merged = cache.merge(
        {"alpha": CommittedState("running", 0, 4), "beta": CommittedState("stopped", 1, 1)}
    )

    assert merged.changed is True
    assert merged.taken == {"alpha": "running", "beta": "stopped"}
    assert cache.admits("alpha") and not cache.admits("beta")


def test_early_slots_are_offered_only_for_the_start_being_probed() -> None:
    cache = EngineStateCache()
    cache.merge({"alpha": CommittedState("starting", 0, 5)})
    cache.probing_started("alpha", 4)  # a late notice about an earlier start

    assert not cache.admits_early("alpha")
    cache.probing_started("alpha", 5)
    assert cache.admits_early("alpha")


def test_an_engine_found_dead_keeps_its_drain_token() -> None:
    cache = EngineStateCache()
    cache.merge({"alpha": CommittedState("draining", 9, 2)})

    cache.mark_failed("alpha")

    assert cache.states["alpha"] == CachedState("failed", 9)
    assert cache.state_of("never-seen") == "not_started"
