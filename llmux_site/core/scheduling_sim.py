"""A discrete-event simulator that runs the switch policies of `scheduling` without engines.

In the spirit of llmux's `tests/policy_sim.rs`: requests arrive for models sharing one GPU
group; the active model serves them one at a time (`service_time` each); a switch costs
`switch_cost` seconds during which nothing is served. The policy is the real `decide` of
`scheduling`, evaluated on every arrival, completion and switch, and again at the
`not_before` it asks for (an idealised tick). What the switcher does around the policy is
modelled too: the min-active cooldown (the active model keeps serving meanwhile) and the
drain (a decided switch waits for the request in flight; nothing new starts).

Reported, as llmux does: switches, switch time, waits (service start minus arrival), and the
GPU serving fraction `1 - switch_time / busy_time`, busy time being serving plus switching
(llmux calls it wall time; idle gaps count for no policy). The first bring-up, from no
active model, is free and not counted as a switch, as in llmux's simulator.

Run `python -m llmux_site.core.scheduling_sim` for llmux's comparison table.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from llmux_site.core.scheduling import (
    POLICY_TYPES,
    ModelDemand,
    PolicyConfig,
    QueueSnapshot,
    SwitchCostEstimator,
    decide,
)


class SimulationError(RuntimeError):
    """The policy left requests waiting with nothing scheduled, or asked to look back in time."""


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request: when it arrives and for which model."""

    at: float
    model: str


# ── workload profiles (llmux's benchmark shapes) ─────────────────────────────────────────


def _jittered(arrivals: list[Arrival], seed: int | None, spread: float) -> list[Arrival]:
    """Sorted arrivals; with a seed, each one moved later by up to `spread` seconds."""
    if seed is not None:
        rng = random.Random(seed)  # noqa: S311 - workload jitter, not security
        arrivals = [Arrival(a.at + rng.uniform(0.0, spread), a.model) for a in arrivals]
    return sorted(arrivals, key=lambda a: (a.at, a.model))


def single_model(n: int = 40, *, seed: int | None = None) -> list[Arrival]:
    """Model A every 100 ms: no policy should ever switch."""
    return _jittered([Arrival(i * 0.1, "A") for i in range(n)], seed, 0.05)


def balanced(pairs: int = 20, *, seed: int | None = None) -> list[Arrival]:
    """A and B alternating every 100 ms."""
    arrivals = [Arrival(i * 0.1, "A" if i % 2 == 0 else "B") for i in range(2 * pairs)]
    return _jittered(arrivals, seed, 0.05)


def bursty(burst_size: int = 10, bursts: int = 4, *, seed: int | None = None) -> list[Arrival]:
    """Bursts of `burst_size` requests 10 ms apart, every 5 s, alternating A and B."""
    arrivals = [
        Arrival(b * 5.0 + i * 0.01, "A" if b % 2 == 0 else "B")
        for b in range(bursts)
        for i in range(burst_size)
    ]
    return _jittered(arrivals, seed, 0.005)


def dominant(total: int = 50, share: float = 0.8, *, seed: int | None = None) -> list[Arrival]:
    """`total` requests 50 ms apart, `share` of them for A, B's spread evenly among them.

    B's count is rounded: llmux truncates `50 * (1.0 - 0.8)` (0.19999…) and gets 9, not 10.
    """
    b_total = round(total * (1.0 - share))
    arrivals, b_count = [], 0
    for i in range(total):
        due = int((i + 1) / total * b_total)
        if b_count < min(due, b_total):
            arrivals.append(Arrival(i * 0.05, "B"))
            b_count += 1
        else:
            arrivals.append(Arrival(i * 0.05, "A"))
    return _jittered(arrivals, seed, 0.025)


def interleave(per_model: int = 30, *, seed: int | None = None) -> list[Arrival]:
    """A and B 1 ms apart, a pair every 10 ms: a dense mix."""
    arrivals = [Arrival(i * 0.01 + offset, m) for i in range(per_model) for m, offset in _AB]
    return _jittered(arrivals, seed, 0.0005)


_AB = (("A", 0.0), ("B", 0.001))


def random_mixed(n: int = 100, *, seed: int = 42) -> list[Arrival]:
    """`n` requests for A or B at random, 0 to 200 ms apart."""
    rng = random.Random(seed)  # noqa: S311 - workload generation, not security
    arrivals, at = [], 0.0
    for _ in range(n):
        at += rng.uniform(0.0, 0.2)
        arrivals.append(Arrival(at, rng.choice("AB")))
    return arrivals


PROFILES: dict[str, Callable[..., list[Arrival]]] = {
    "single_model": single_model,
    "balanced": balanced,
    "bursty": bursty,
    "dominant": dominant,
    "interleave": interleave,
}


# ── the simulation ──────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Served:
    """One request as served: its index in the workload, model, arrival and start."""

    index: int
    model: str
    arrived: float
    started: float

    @property
    def wait(self) -> float:
        return self.started - self.arrived


@dataclass(frozen=True, slots=True)
class SwitchRecord:
    """One simulated switch: when it started (after any drain), from, to, and its cost."""

    started: float
    from_model: str
    to_model: str
    cost: float


@dataclass(frozen=True, slots=True)
class SimResult:
    """What one policy did with one workload."""

    policy: str
    profile: str
    requests: int
    switches: int
    switch_time: float
    serve_time: float
    makespan: float  # first arrival to last completion
    served: tuple[Served, ...]
    switch_log: tuple[SwitchRecord, ...]

    @property
    def busy_time(self) -> float:
        return self.serve_time + self.switch_time

    @property
    def gpu_serving_fraction(self) -> float:
        return 1.0 - self.switch_time / self.busy_time if self.busy_time > 0 else 1.0

    @property
    def avg_wait(self) -> float:
        return sum(s.wait for s in self.served) / len(self.served) if self.served else 0.0

    @property
    def max_wait(self) -> float:
        return max((s.wait for s in self.served), default=0.0)

    def line(self) -> str:
        return (
            f"{self.policy:<11} reqs={self.requests:<4} sw={self.switches:<3} "
            f"sw_t={self.switch_time:>6.1f}s gpu={self.gpu_serving_fraction * 100:>5.1f}% "
            f"max_w={self.max_wait:>6.1f}s avg_w={self.avg_wait:>5.1f}s"
        )


SwitchCost = float | Callable[[str, str], float]

_ARRIVE, _SERVED, _SWITCHED, _WAKE = "arrive", "served", "switched", "wake"


@dataclass
class _State:
    """The simulated GPU group; advanced by `_Simulation`."""

    queues: dict[str, deque[tuple[int, float]]]
    active: str | None = None
    active_since: float | None = None
    in_flight: tuple[int, float] | None = None  # (index, arrival) of the request served
    switching_to: str | None = None
    draining_for: str | None = None
    served: list[Served] = field(default_factory=list)
    switch_log: list[SwitchRecord] = field(default_factory=list)

    def snapshot(self) -> QueueSnapshot:
        demand = {
            model: ModelDemand(
                waiting=len(queue),
                oldest_arrival=queue[0][1] if queue else None,
                in_flight=int(model == self.active and self.in_flight is not None),
            )
            for model, queue in self.queues.items()
        }
        return QueueSnapshot(self.active, self.active_since, demand)


class _Simulation:
    def __init__(
        self,
        arrivals: Sequence[Arrival],
        config: PolicyConfig,
        *,
        service_time: float,
        switch_cost: SwitchCost,
        estimator: SwitchCostEstimator,
    ) -> None:
        self.arrivals = arrivals
        self.config = config
        self.service_time = service_time
        self.switch_cost = switch_cost
        self.estimator = estimator
        self.state = _State(queues={a.model: deque() for a in arrivals})
        self.events: list[tuple[float, int, str, int]] = []
        self.order = itertools.count()
        self.wakes: set[float] = set()
        for index, arrival in enumerate(arrivals):
            self.push(arrival.at, _ARRIVE, index)

    def push(self, at: float, kind: str, index: int = -1) -> None:
        heapq.heappush(self.events, (at, next(self.order), kind, index))

    def wake_at(self, at: float, now: float) -> None:
        if at <= now:
            raise SimulationError(f"asked to look again at {at} at {now}: it would never advance")
        if at not in self.wakes:
            self.wakes.add(at)
            self.push(at, _WAKE)

    def run(self) -> None:
        while self.events:
            now, _, kind, index = heapq.heappop(self.events)
            self.apply(now, kind, index)
            self.step(now)
        waiting = sum(len(q) for q in self.state.queues.values())
        if waiting:
            raise SimulationError(f"{waiting} requests still wait and nothing is scheduled")

    def apply(self, now: float, kind: str, index: int) -> None:
        state = self.state
        if kind == _ARRIVE:
            state.queues[self.arrivals[index].model].append((index, self.arrivals[index].at))
        elif kind == _SERVED:
            state.in_flight = None
        elif kind == _SWITCHED and state.switching_to is not None:
            state.active, state.active_since = state.switching_to, now
            state.switching_to = None
            # The switcher's settle phase: the woken requests take their slots before the
            # policy may decide anything else (so every switch serves at least one request).
            self.serve_next(now)

    def step(self, now: float) -> None:
        state = self.state
        if state.switching_to is not None:
            return
        if state.draining_for is not None:
            if state.in_flight is None:
                self.start_switch(state.draining_for, now)
            return
        decision = decide(state.snapshot(), self.config, self.estimator, now=now)
        if decision.target is not None and decision.target != state.active:
            if self.switch_when_allowed(decision.target, now):
                return
        elif decision.not_before is not None:
            self.wake_at(decision.not_before, now)
        self.serve_next(now)

    def switch_when_allowed(self, target: str, now: float) -> bool:
        """Start (or drain for) a switch; False while the min-active cooldown holds it."""
        state = self.state
        if state.active is not None and state.active_since is not None:
            cooldown_end = state.active_since + self.config.min_active_secs
            if now < cooldown_end:
                self.wake_at(cooldown_end, now)
                return False
        if state.in_flight is not None:
            state.draining_for = target
        else:
            self.start_switch(target, now)
        return True

    def start_switch(self, target: str, now: float) -> None:
        state = self.state
        state.draining_for = None
        if state.active is None:  # the first bring-up: free, as in llmux's simulator
            state.active, state.active_since = target, now
            self.serve_next(now)
            return
        cost = self.cost(state.active, target)
        self.estimator.observe(state.active, target, cost)
        state.switching_to = target
        state.switch_log.append(SwitchRecord(now, state.active, target, cost))
        self.push(now + cost, _SWITCHED)

    def cost(self, from_model: str, to_model: str) -> float:
        if callable(self.switch_cost):
            return self.switch_cost(from_model, to_model)
        return self.switch_cost

    def serve_next(self, now: float) -> None:
        state = self.state
        if state.active is None or state.in_flight is not None:
            return
        queue = state.queues.get(state.active)
        if not queue:
            return
        index, arrived = queue.popleft()
        state.in_flight = (index, arrived)
        state.served.append(Served(index, state.active, arrived, now))
        self.push(now + self.service_time, _SERVED, index)


def simulate(
    arrivals: Sequence[Arrival],
    config: PolicyConfig,
    *,
    service_time: float = 0.5,
    switch_cost: SwitchCost = 10.0,
    estimator: SwitchCostEstimator | None = None,
    profile: str = "",
) -> SimResult:
    """Run `config.policy_type` over `arrivals`; raises SimulationError if the policy stalls.

    Without an `estimator`, the policy starts from one whose default is `switch_cost` (as if
    history had measured it; a callable cost starts from llmux's 10 s) and learns from every
    simulated switch.
    """
    if estimator is None:
        default = 10.0 if callable(switch_cost) else switch_cost
        estimator = SwitchCostEstimator(default_secs=default)
    simulation = _Simulation(
        arrivals,
        config,
        service_time=service_time,
        switch_cost=switch_cost,
        estimator=estimator,
    )
    simulation.run()
    state = simulation.state
    first = min((a.at for a in arrivals), default=0.0)
    last = max((s.started + service_time for s in state.served), default=first)
    return SimResult(
        policy=config.policy_type,
        profile=profile,
        requests=len(arrivals),
        switches=len(state.switch_log),
        switch_time=sum(record.cost for record in state.switch_log),
        serve_time=len(state.served) * service_time,
        makespan=last - first,
        served=tuple(state.served),
        switch_log=tuple(state.switch_log),
    )


def benchmark(
    *,
    switch_cost: float = 10.0,
    service_time: float = 0.5,
    base: PolicyConfig | None = None,
    profiles: Mapping[str, Callable[..., list[Arrival]]] = PROFILES,
    policies: Iterable[str] = POLICY_TYPES,
) -> list[SimResult]:
    """Every policy on every profile (llmux's defaults unless `base` says otherwise)."""
    base = base or PolicyConfig()
    results = []
    for name, make in profiles.items():
        arrivals = make()
        for policy in policies:
            config = PolicyConfig.from_values({**_as_dict(base), "policy_type": policy})
            results.append(
                simulate(
                    arrivals,
                    config,
                    service_time=service_time,
                    switch_cost=switch_cost,
                    profile=name,
                )
            )
    return results


def _as_dict(config: PolicyConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def format_results(results: Iterable[SimResult]) -> str:
    lines, profile = [], None
    for result in results:
        if result.profile != profile:
            profile = result.profile
            lines.append(f"{profile}:")
        lines.append(f"  {result.line()}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare llmux's switch policies.")
    parser.add_argument("--switch-cost", type=float, action="append", default=None)
    parser.add_argument("--service-time", type=float, default=0.5)
    parser.add_argument("--min-active-secs", type=float, default=PolicyConfig().min_active_secs)
    args = parser.parse_args(argv)
    base = PolicyConfig(min_active_secs=args.min_active_secs)
    for cost in args.switch_cost or [2.0, 5.0, 10.0, 20.0]:
        print(f"== switch cost {cost:g}s, service {args.service_time:g}s ==")
        results = benchmark(switch_cost=cost, service_time=args.service_time, base=base)
        print(format_results(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
