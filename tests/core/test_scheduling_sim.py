"""The policy simulator: llmux's workload profiles, what it reports, and how policies compare."""

from __future__ import annotations

import pytest

from llmux_site.core import scheduling_sim
from llmux_site.core.scheduling import POLICY_TYPES, Decision, PolicyConfig, Reason
from llmux_site.core.scheduling_sim import (
    PROFILES,
    Arrival,
    SimulationError,
    balanced,
    benchmark,
    dominant,
    random_mixed,
    simulate,
)

# llmux's tests/scheduling_sim.rs has no min-active cooldown; its comparison runs without one.
LLMUX_BENCH = PolicyConfig(min_active_secs=0)


def config(policy: str, base: PolicyConfig = LLMUX_BENCH) -> PolicyConfig:
    return PolicyConfig(
        policy_type=policy,
        min_active_secs=base.min_active_secs,
        max_wait_secs=base.max_wait_secs,
    )


def test_profiles_have_llmuxs_shapes() -> None:
    sizes = {name: len(make()) for name, make in PROFILES.items()}

    assert sizes == {
        "single_model": 40,
        "balanced": 40,
        "bursty": 40,
        "dominant": 50,
        "interleave": 60,
    }
    assert balanced()[:3] == [Arrival(0.0, "A"), Arrival(0.1, "B"), Arrival(0.2, "A")]
    assert sum(a.model == "B" for a in dominant()) == 10
    assert {a.model for a in PROFILES["single_model"]()} == {"A"}


def test_profiles_are_deterministic_and_a_seed_jitters_them_reproducibly() -> None:
    for name, make in PROFILES.items():
        assert make() == make(), name
        assert make(seed=7) == make(seed=7), name
        assert make(seed=7) != make(seed=8), name
        assert make(seed=7) != make(), name
        assert [a.at for a in make(seed=7)] == sorted(a.at for a in make(seed=7)), name
    assert random_mixed(seed=1) == random_mixed(seed=1) != random_mixed(seed=2)


@pytest.mark.parametrize("policy", POLICY_TYPES)
@pytest.mark.parametrize("profile", [*PROFILES, "random_mixed"])
def test_every_request_is_served_exactly_once_and_never_before_it_arrives(
    policy: str, profile: str
) -> None:
    arrivals = random_mixed() if profile == "random_mixed" else PROFILES[profile](seed=3)

    result = simulate(arrivals, config(policy), switch_cost=5.0)

    assert sorted(s.index for s in result.served) == list(range(len(arrivals)))
    for served in result.served:
        assert served.model == arrivals[served.index].model
        assert served.started >= served.arrived == arrivals[served.index].at


def test_one_model_alone_never_switches() -> None:
    for policy in POLICY_TYPES:
        result = simulate(PROFILES["single_model"](), config(policy), switch_cost=10.0)

        assert (result.switches, result.gpu_serving_fraction) == (0, 1.0)


def test_the_report_adds_up() -> None:
    arrivals = [Arrival(0.0, "A"), Arrival(0.0, "B"), Arrival(10.0, "A")]

    result = simulate(arrivals, config("fifo"), service_time=1.0, switch_cost=4.0)

    # A 0-1, switch to B 1-5, B 5-6, idle, A arrives: switch 10-14, A 14-15.
    assert [(s.started, s.model) for s in result.served] == [(0.0, "A"), (5.0, "B"), (14.0, "A")]
    assert [(r.started, r.from_model, r.to_model) for r in result.switch_log] == [
        (1.0, "A", "B"),
        (10.0, "B", "A"),
    ]
    assert (result.switches, result.switch_time, result.serve_time) == (2, 8.0, 3.0)
    assert result.gpu_serving_fraction == pytest.approx(3.0 / 11.0)
    assert (result.avg_wait, result.max_wait, result.makespan) == (3.0, 5.0, 15.0)


def test_a_switch_waits_for_the_request_in_flight_and_the_min_active_cooldown() -> None:
    arrivals = [Arrival(0.0, "A"), Arrival(0.5, "B"), Arrival(5.0, "A")]
    cooldown = PolicyConfig(policy_type="fifo", min_active_secs=3.0)

    result = simulate(arrivals, cooldown, service_time=2.0, switch_cost=1.0)

    # B waits for A's request in flight (until 2), then A's cooldown (until 3); B is active
    # from 4, so the switch back waits for B's request (until 6) and its cooldown (until 7).
    assert [r.started for r in result.switch_log] == [3.0, 7.0]


def test_a_policy_that_leaves_requests_waiting_with_nothing_scheduled_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*_args: object, **_kwargs: object) -> Decision:
        return Decision.wait(None, Reason.NO_DEMAND)

    monkeypatch.setattr(scheduling_sim, "decide", never)

    with pytest.raises(SimulationError, match="still wait"):
        simulate([Arrival(0.0, "A")], config("fifo"))


@pytest.mark.parametrize("switch_cost", [2.0, 5.0, 10.0, 20.0])
@pytest.mark.parametrize("profile", ["balanced", "dominant"])
def test_time_slice_serves_more_of_the_gpu_than_fifo_in_llmuxs_benchmark(
    profile: str, switch_cost: float
) -> None:
    arrivals = PROFILES[profile]()

    fifo = simulate(arrivals, config("fifo"), switch_cost=switch_cost)
    time_slice = simulate(arrivals, config("time_slice"), switch_cost=switch_cost)

    assert time_slice.gpu_serving_fraction > fifo.gpu_serving_fraction
    assert time_slice.switches < fifo.switches


@pytest.mark.parametrize("switch_cost", [2.0, 10.0])
def test_with_the_default_cooldown_time_slice_still_never_serves_less_than_fifo(
    switch_cost: float,
) -> None:
    # The 5 s min-active cooldown already gives fifo slices: on `dominant` both make the two
    # switches the 15 s staleness bound requires (a tie); on `balanced` time_slice wins.
    results = {
        (r.profile, r.policy): r
        for r in benchmark(
            switch_cost=switch_cost, profiles={"balanced": balanced, "dominant": dominant}
        )
    }

    for profile in ("balanced", "dominant"):
        ts, fifo = results[profile, "time_slice"], results[profile, "fifo"]
        assert ts.gpu_serving_fraction >= fifo.gpu_serving_fraction
        assert ts.avg_wait < fifo.avg_wait
    balanced_ts, balanced_fifo = results["balanced", "time_slice"], results["balanced", "fifo"]
    assert balanced_ts.gpu_serving_fraction > balanced_fifo.gpu_serving_fraction


def test_cost_aware_switches_less_than_fifo_on_alternating_traffic() -> None:
    arrivals = PROFILES["interleave"]()

    fifo = simulate(arrivals, config("fifo"), switch_cost=10.0)
    cost_aware = simulate(arrivals, config("cost_aware"), switch_cost=10.0)

    assert cost_aware.switches < fifo.switches
    assert cost_aware.gpu_serving_fraction > fifo.gpu_serving_fraction


def test_the_benchmark_table_names_every_profile_and_policy() -> None:
    table = scheduling_sim.format_results(benchmark(switch_cost=2.0))

    for name in PROFILES:
        assert f"{name}:" in table
    assert table.count("time_slice") == len(PROFILES)
