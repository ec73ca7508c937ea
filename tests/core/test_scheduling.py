"""The switch policies' decisions on hand-made snapshots, and the switch cost estimator.

Unless a test says otherwise: llmux's defaults (switch cost estimate 10 s, amortisation 0.5
so 5 waiting requests pay for a switch, coalescing 2 s, max wait 15 s, quantum 2 s,
min active 5 s), and `chat` is the active model since t=0.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from llmux_site.core.scheduling import (
    Decision,
    ModelDemand,
    PolicyConfig,
    QueueSnapshot,
    Reason,
    SwitchCostEstimator,
    decide,
    decide_cost_aware,
    decide_fifo,
    decide_time_slice,
)

FIFO = PolicyConfig(policy_type="fifo")
COST_AWARE = PolicyConfig(policy_type="cost_aware")
TIME_SLICE = PolicyConfig(policy_type="time_slice")
COSTS = SwitchCostEstimator()


def waiting(count: int, oldest: float) -> ModelDemand:
    return ModelDemand(waiting=count, oldest_arrival=oldest)


BUSY = ModelDemand(in_flight=2)
IDLE = ModelDemand()


def chat_active(**demand: ModelDemand) -> QueueSnapshot:
    return QueueSnapshot(active="chat", active_since=0.0, demand=demand)


def nothing_active(**demand: ModelDemand) -> QueueSnapshot:
    return QueueSnapshot(active=None, demand=demand)


def switch(target: str, reason: Reason) -> Decision:
    return Decision(target, None, reason)


def wait(not_before: float | None, reason: Reason) -> Decision:
    return Decision(None, not_before, reason)


# ── fifo ────────────────────────────────────────────────────────────────────────────────


def test_fifo_switches_to_the_model_of_the_oldest_waiting_request() -> None:
    snapshot = chat_active(chat=BUSY, code=waiting(1, oldest=4.0), embed=waiting(9, oldest=3.0))

    assert decide_fifo(snapshot) == switch("embed", Reason.OLDEST_REQUEST)


def test_fifo_serves_the_active_models_older_requests_first() -> None:
    snapshot = chat_active(chat=waiting(3, oldest=1.0), code=waiting(1, oldest=2.0))

    assert decide_fifo(snapshot) == wait(None, Reason.ACTIVE_OLDEST)


def test_fifo_cold_starts_the_oldest_waiting_model_when_nothing_is_active() -> None:
    snapshot = nothing_active(code=waiting(1, oldest=2.0), embed=waiting(1, oldest=1.0))

    assert decide(snapshot, FIFO, COSTS, now=2.0) == switch("embed", Reason.COLD_START)


def test_fifo_breaks_a_tie_by_model_name() -> None:
    snapshot = chat_active(embed=waiting(1, oldest=1.0), code=waiting(1, oldest=1.0))

    assert decide_fifo(snapshot).target == "code"


def test_no_policy_acts_when_nobody_waits() -> None:
    snapshot = chat_active(chat=BUSY, code=IDLE)

    for config in (FIFO, COST_AWARE, TIME_SLICE):
        assert decide(snapshot, config, COSTS, now=100.0) == wait(None, Reason.NO_DEMAND)


# ── cost_aware ──────────────────────────────────────────────────────────────────────────


def test_cost_aware_keeps_the_active_model_for_a_serving_window_as_long_as_the_switch() -> None:
    snapshot = chat_active(chat=IDLE, code=waiting(20, oldest=1.0))

    assert decide_cost_aware(snapshot, COST_AWARE, COSTS, now=3.0) == wait(
        10.0, Reason.SERVING_WINDOW
    )


def test_cost_aware_switches_at_once_when_the_queue_amortizes_the_switch() -> None:
    snapshot = chat_active(chat=BUSY, code=waiting(5, oldest=11.5))

    assert decide_cost_aware(snapshot, COST_AWARE, COSTS, now=12.0) == switch(
        "code", Reason.AMORTIZED
    )


def test_cost_aware_coalesces_demand_below_the_threshold_from_its_first_request() -> None:
    snapshot = chat_active(chat=IDLE, code=waiting(4, oldest=11.5))

    assert decide_cost_aware(snapshot, COST_AWARE, COSTS, now=12.0) == wait(13.5, Reason.COALESCING)


def test_cost_aware_switches_when_coalescing_ends_and_the_active_model_is_idle() -> None:
    snapshot = chat_active(chat=IDLE, code=waiting(1, oldest=11.5))

    assert decide_cost_aware(snapshot, COST_AWARE, COSTS, now=13.5) == switch(
        "code", Reason.COALESCED
    )


def test_cost_aware_stays_with_a_busy_active_model_until_the_request_goes_stale() -> None:
    snapshot = chat_active(chat=BUSY, code=waiting(1, oldest=11.5))

    decision = decide_cost_aware(snapshot, COST_AWARE, COSTS, now=14.0)

    assert decision == wait(11.5 + 15.0, Reason.ACTIVE_BUSY)
    later = decide_cost_aware(snapshot, COST_AWARE, COSTS, now=26.5)
    assert later == switch("code", Reason.STALE)


def test_a_stale_request_waits_until_the_active_model_has_served_its_switch_cost() -> None:
    snapshot = QueueSnapshot("chat", 10.0, {"chat": BUSY, "code": waiting(1, oldest=0.0)})

    assert decide_cost_aware(snapshot, COST_AWARE, COSTS, now=15.0) == wait(20.0, Reason.QUANTUM)


def test_cost_aware_with_amortization_zero_switches_on_one_request_after_the_window() -> None:
    config = PolicyConfig(policy_type="cost_aware", amortization_factor=0.0)
    snapshot = chat_active(chat=BUSY, code=waiting(1, oldest=11.9))

    assert decide_cost_aware(snapshot, config, COSTS, now=12.0) == switch("code", Reason.AMORTIZED)


def test_cost_aware_uses_measured_switch_costs_for_window_and_threshold() -> None:
    costs = SwitchCostEstimator()
    costs.observe("chat", "code", 2.0)  # 2 s: window 2 s, one request is enough
    snapshot = chat_active(chat=BUSY, code=waiting(1, oldest=0.5))

    assert decide_cost_aware(snapshot, COST_AWARE, costs, now=1.0) == wait(
        2.0, Reason.SERVING_WINDOW
    )
    assert decide_cost_aware(snapshot, COST_AWARE, costs, now=3.0) == switch(
        "code", Reason.AMORTIZED
    )


def test_cost_aware_prefers_the_target_with_the_most_waiting_requests() -> None:
    snapshot = chat_active(chat=IDLE, code=waiting(5, oldest=10.0), embed=waiting(8, oldest=11.0))

    assert decide_cost_aware(snapshot, COST_AWARE, COSTS, now=12.0).target == "embed"


def test_cost_aware_cold_starts_without_coalescing() -> None:
    snapshot = nothing_active(code=waiting(1, oldest=0.0))

    assert decide_cost_aware(snapshot, COST_AWARE, COSTS, now=0.0) == switch(
        "code", Reason.COLD_START
    )


# ── time_slice ──────────────────────────────────────────────────────────────────────────


def test_time_slice_keeps_a_model_with_requests_in_flight() -> None:
    snapshot = chat_active(chat=BUSY, code=waiting(30, oldest=6.0))

    assert decide_time_slice(snapshot, TIME_SLICE, COSTS, now=8.0) == wait(21.0, Reason.ACTIVE_BUSY)


def test_time_slice_keeps_a_model_with_requests_of_its_own_waiting() -> None:
    snapshot = chat_active(chat=waiting(1, oldest=7.0), code=waiting(30, oldest=6.0))

    assert decide_time_slice(snapshot, TIME_SLICE, COSTS, now=8.0).target is None


def test_time_slice_switches_to_the_most_demand_once_the_active_model_drained() -> None:
    snapshot = chat_active(
        chat=IDLE, code=waiting(2, oldest=6.0), embed=waiting(3, oldest=7.0), other=IDLE
    )

    assert decide_time_slice(snapshot, TIME_SLICE, COSTS, now=8.0) == switch(
        "embed", Reason.DRAINED
    )


def test_time_slice_breaks_equal_demand_by_the_oldest_request() -> None:
    snapshot = chat_active(chat=IDLE, code=waiting(3, oldest=7.0), embed=waiting(3, oldest=6.0))

    assert decide_time_slice(snapshot, TIME_SLICE, COSTS, now=8.0).target == "embed"


def test_time_slice_gives_a_drained_model_its_min_active_time() -> None:
    snapshot = QueueSnapshot("chat", 1.0, {"chat": IDLE, "code": waiting(1, oldest=2.0)})

    assert decide_time_slice(snapshot, TIME_SLICE, COSTS, now=3.0) == wait(6.0, Reason.MIN_ACTIVE)


def test_time_slice_preempts_a_busy_model_for_a_stale_request() -> None:
    snapshot = chat_active(chat=BUSY, code=waiting(1, oldest=5.0))

    assert decide_time_slice(snapshot, TIME_SLICE, COSTS, now=20.0) == switch("code", Reason.STALE)


def test_time_slice_lets_the_active_model_finish_its_quantum_before_a_stale_switch() -> None:
    costs = SwitchCostEstimator()
    costs.observe("chat", "code", 0.5)  # cheaper than the quantum: the quantum rules
    snapshot = QueueSnapshot("chat", 19.0, {"chat": BUSY, "code": waiting(1, oldest=0.0)})

    assert decide_time_slice(snapshot, TIME_SLICE, costs, now=20.0) == wait(21.0, Reason.QUANTUM)
    assert decide_time_slice(snapshot, TIME_SLICE, costs, now=21.0) == switch("code", Reason.STALE)


def test_time_slice_quantum_follows_the_configured_minimum() -> None:
    config = PolicyConfig(policy_type="time_slice", min_quantum_ms=30_000)
    snapshot = QueueSnapshot("chat", 0.0, {"chat": BUSY, "code": waiting(1, oldest=0.0)})

    assert decide_time_slice(snapshot, config, COSTS, now=20.0) == wait(30.0, Reason.QUANTUM)


def test_every_wait_asks_to_look_again_later_than_now() -> None:
    snapshots = [
        chat_active(chat=BUSY, code=waiting(1, oldest=t)) for t in (0.0, 1.0, 5.0, 9.9, 14.0)
    ] + [chat_active(chat=IDLE, code=waiting(n, oldest=9.0)) for n in (1, 4, 5)]
    for snapshot in snapshots:
        for config in (COST_AWARE, TIME_SLICE):
            for now in (0.5, 3.0, 10.0, 10.9, 14.99):
                decision = decide(snapshot, config, COSTS, now=now)
                if decision.target is None and decision.not_before is not None:
                    assert decision.not_before > now, (snapshot, config.policy_type, now)


# ── configuration ───────────────────────────────────────────────────────────────────────


def test_policy_config_takes_a_config_files_policy_section() -> None:
    config = PolicyConfig.from_values(
        {
            "policy_type": "time_slice",
            "max_wait_secs": 30,
            "sleep_level": 1,
            "tick_interval_ms": None,
        }
    )

    assert (config.policy_type, config.max_wait, config.tick_interval) == ("time_slice", 30, 0.5)


@pytest.mark.parametrize(
    "values",
    [{"policy_type": "round_robin"}, {"max_wait_secs": -1}, {"min_quantum_ms": float("nan")}],
)
def test_policy_config_refuses_nonsense(values: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PolicyConfig.from_values(values)


def test_a_waiting_count_without_an_arrival_time_is_refused() -> None:
    with pytest.raises(ValueError, match="arrival"):
        ModelDemand(waiting=2)


# ── switch cost estimator ───────────────────────────────────────────────────────────────


def test_an_unmeasured_switch_costs_the_default() -> None:
    assert SwitchCostEstimator().estimate("chat", "code") == 10.0
    assert SwitchCostEstimator(default_secs=4.0).estimate(None, "code") == 4.0


def test_the_first_measurement_is_taken_as_is_and_later_ones_smoothed() -> None:
    costs = SwitchCostEstimator()
    costs.observe("chat", "code", 10.0)
    assert costs.estimate("chat", "code") == 10.0

    costs.observe("chat", "code", 20.0)

    assert costs.estimate("chat", "code") == pytest.approx(0.3 * 20.0 + 0.7 * 10.0)


def test_an_unmeasured_pair_falls_back_to_switches_into_the_same_target() -> None:
    costs = SwitchCostEstimator()
    costs.observe("chat", "code", 3.0)

    assert costs.estimate("embed", "code") == 3.0
    assert costs.estimate("code", "chat") == 10.0


def test_cold_starts_and_warm_switches_are_estimated_apart() -> None:
    costs = SwitchCostEstimator()
    costs.observe(None, "code", 90.0)
    costs.observe("chat", "code", 3.0)

    assert costs.estimate(None, "code") == 90.0
    assert costs.estimate("embed", "code") == 3.0
    assert costs.estimate(None, "chat") == 10.0


def test_a_warm_switch_longer_than_a_minute_counts_as_a_minute() -> None:
    costs = SwitchCostEstimator()
    costs.observe("chat", "code", 600.0)

    assert costs.estimate("chat", "code") == 60.0


def test_history_is_replayed_in_finishing_order_and_unfinished_rows_are_skipped() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    history = [
        ("chat", "code", 20_000.0, start + timedelta(minutes=2)),
        ("chat", "code", 10_000.0, start + timedelta(minutes=1)),
        ("chat", "code", None, start + timedelta(minutes=3)),  # failed: no duration
        ("chat", "code", 1.0, None),  # still running
    ]

    costs = SwitchCostEstimator(history)

    assert costs.estimate("chat", "code") == pytest.approx(0.3 * 20.0 + 0.7 * 10.0)
