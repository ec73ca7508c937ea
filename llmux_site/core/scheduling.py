"""llmux 0.5's switch policies as pure decisions: given who waits for what, which model next.

The switcher (services) takes a `QueueSnapshot` of one GPU group, calls `decide` with the
group's `PolicyConfig`, a `SwitchCostEstimator` and the current time, and either queues a
switch to `Decision.target` now or looks again at `Decision.not_before` (or at the next
arrival, completion or tick, whichever comes first). No state lives here between calls:
what llmux kept in memory (a pending coalescing timer per model) is recomputed from the
snapshot, so any worker can take over a group after a restart.

Policies (`policy.policy_type`):

fifo
    Switch to the model of the oldest waiting request, at once. llmux switches on every
    request for a non-active model; here a request for the active model that is older still
    is served first (it is FIFO across models). The min-active cooldown and the drain are
    the switcher's phases, as in llmux.

cost_aware
    As llmux's `CostAwarePolicy`: with no active model, bring up the oldest waiting one; a
    request that has waited `max_wait_secs` forces a switch to its model (staleness bound,
    see below); the active model keeps the GPU for a *serving window* as long as the
    estimated cost of the switch away (so a switch is amortised by serving time); then a
    target whose queue reaches `ceil(amortization_factor * cost_secs)` (at least 1; so 0
    means "no coalescing") is switched to at once; otherwise its requests coalesce for
    `coalesce_window_ms` after the first of them arrived. Among several ready targets the
    one with the most waiting requests wins (then the oldest request, then the name).
    Difference: when the coalescing window ends below the threshold, llmux switches anyway;
    here the active model keeps the GPU while it still has demand of its own (in flight or
    waiting) and the target waits for the active model to go idle or for the staleness
    bound. Evicting a busy model for demand that does not amortise the switch is what the
    policy exists to avoid, and `max_wait_secs` still bounds the wait.

time_slice
    As llmux's `TimeSlicePolicy`, drain-first: the active model keeps the GPU while it has
    demand; once it is idle (nothing waiting or in flight) and has been active
    `min_active_secs`, switch to the model with the most waiting requests (ties: the oldest
    request, then the name). A request that has waited `max_wait_secs` forces a switch to
    its model (staleness bound, below).
    Difference: llmux 0.5 parses `min_quantum_ms` and ignores it; here it is the shortest
    slice of the staleness rule.

Staleness bound (cost_aware and time_slice)
    llmux checks staleness only when a request arrives, and then switches at once. Here the
    snapshot is evaluated on every arrival, completion and tick, so staleness is seen even
    when nothing new arrives, and a stale request preempts the active model only after it
    has held the GPU for `max(min_quantum_ms, estimated cost of that switch)`. Without that
    slice an overloaded group (requests of both models over the bound) switches back as soon
    as a switch completes, each switch making the other side stale: the policy simulator
    showed endless ping-pong with a 2 s quantum, and GPU serving fractions under 30 % with a
    10 s switch, where this rule keeps every preemption paid for by at least as much
    serving. So `max_wait_secs` is a bound on when a preemption is *decided*; the wait a
    client sees adds the active model's slice and the switch itself, as in llmux (whose
    switch time is never part of its bound either).

The cost estimator follows llmux's `cost_aware.rs`/`cost.rs`: an EWMA (alpha 0.3, first
sample taken as is) per (from, to), cold starts (from None) kept apart from warm switches,
warm samples capped at 60 s (a longer "switch" was a cold start or a recovery), and a 10 s
default. Added here: before the default, a per-target EWMA over every source, so a model
whose wake was measured once from A is not assumed to take 10 s from B.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

POLICY_TYPES = ("fifo", "cost_aware", "time_slice")


class Reason(enum.StrEnum):
    """Why a decision was taken: short codes for logs, swap events and tests."""

    NO_DEMAND = "no_demand"  # nobody waits for a non-active model
    OLDEST_REQUEST = "oldest_request"  # fifo: the oldest waiting request is another model's
    ACTIVE_OLDEST = "active_oldest"  # fifo: the active model holds the oldest request
    COLD_START = "cold_start"  # nothing is active: bring up the oldest waiting model
    STALE = "stale"  # a request reached max_wait_secs
    SERVING_WINDOW = "serving_window"  # cost_aware: the active model has not served its cost
    AMORTIZED = "amortized"  # cost_aware: the target's queue pays for the switch
    COALESCING = "coalescing"  # cost_aware: waiting for more requests to batch
    COALESCED = "coalesced"  # cost_aware: the window ended and the active model is idle
    ACTIVE_BUSY = "active_busy"  # the active model still has demand: stay
    MIN_ACTIVE = "min_active"  # time_slice: the active model has not been active long enough
    QUANTUM = "quantum"  # a stale request waits for the active model to finish its slice
    DRAINED = "drained"  # time_slice: the active model is idle: serve the most demand


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The `policy` section's scheduling values (llmux 0.5's defaults)."""

    policy_type: str = "fifo"
    request_timeout_secs: float = 300.0
    drain_before_switch: bool = True
    min_active_secs: float = 5.0
    coalesce_window_ms: float = 2000.0
    amortization_factor: float = 0.5
    max_wait_secs: float = 15.0
    tick_interval_ms: float = 500.0
    min_quantum_ms: float = 2000.0

    def __post_init__(self) -> None:
        if self.policy_type not in POLICY_TYPES:
            raise ValueError(f"policy_type must be one of {POLICY_TYPES}: {self.policy_type!r}")
        numbers = {
            "request_timeout_secs": self.request_timeout_secs,
            "min_active_secs": self.min_active_secs,
            "coalesce_window_ms": self.coalesce_window_ms,
            "amortization_factor": self.amortization_factor,
            "max_wait_secs": self.max_wait_secs,
            "tick_interval_ms": self.tick_interval_ms,
            "min_quantum_ms": self.min_quantum_ms,
        }
        for name, value in numbers.items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0: {value!r}")

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> PolicyConfig:
        """Build from a mapping (a config file's `policy`); None or missing keys keep defaults.

        Keys that are not scheduling values (`sleep_level`, `eviction`) are ignored.
        """
        known = {name for name in cls.__dataclass_fields__}
        given = {k: v for k, v in values.items() if k in known and v is not None}
        return cls(**given)  # type: ignore[arg-type]  # values are checked in __post_init__

    @property
    def max_wait(self) -> float:
        return self.max_wait_secs

    @property
    def coalesce_window(self) -> float:
        return self.coalesce_window_ms / 1000.0

    @property
    def min_quantum(self) -> float:
        return self.min_quantum_ms / 1000.0

    @property
    def tick_interval(self) -> float:
        return self.tick_interval_ms / 1000.0


@dataclass(frozen=True, slots=True)
class ModelDemand:
    """Requests for one model: how many wait (and since when), how many are being served."""

    waiting: int = 0
    oldest_arrival: float | None = None  # clock seconds of the oldest waiting request
    in_flight: int = 0  # meaningful for the active model only

    def __post_init__(self) -> None:
        if self.waiting < 0 or self.in_flight < 0:
            raise ValueError("waiting and in_flight must be >= 0")
        if self.waiting and self.oldest_arrival is None:
            raise ValueError("waiting requests need the oldest one's arrival time")

    @property
    def busy(self) -> bool:
        return self.waiting > 0 or self.in_flight > 0


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """One GPU group at one moment: the active model and every model's demand.

    All times (`active_since`, `oldest_arrival`, the `now` given to `decide`) are seconds
    on one clock: monotonic or wall, as long as it is the same one.
    """

    active: str | None
    active_since: float | None = None
    demand: Mapping[str, ModelDemand] = field(default_factory=dict)

    def of(self, model: str) -> ModelDemand:
        return self.demand.get(model, _NO_DEMAND)

    def candidates(self) -> list[tuple[str, ModelDemand]]:
        """Non-active models with waiting requests, oldest request first (then by name)."""
        found = [(m, d) for m, d in self.demand.items() if m != self.active and d.waiting > 0]
        return sorted(found, key=lambda item: (_arrival(item[1]), item[0]))

    def active_busy(self) -> bool:
        return self.active is not None and self.of(self.active).busy


_NO_DEMAND = ModelDemand()


def _arrival(demand: ModelDemand) -> float:
    return math.inf if demand.oldest_arrival is None else demand.oldest_arrival


@dataclass(frozen=True, slots=True)
class Decision:
    """Switch to `target` now, or (target None) look again at `not_before` at the latest.

    `not_before` None means nothing will change by itself: look again on the next event
    (an arrival, a completion) or tick.
    """

    target: str | None
    not_before: float | None
    reason: str

    @classmethod
    def switch(cls, target: str, reason: Reason) -> Decision:
        return cls(target, None, reason)

    @classmethod
    def wait(cls, not_before: float | None, reason: Reason) -> Decision:
        return cls(None, not_before, reason)


# ── switch cost estimation ──────────────────────────────────────────────────────────────

DEFAULT_SWITCH_SECS = 10.0  # llmux's prior: between an L1 wake (2-4 s) and an L2 one (8-15 s)
EWMA_ALPHA = 0.3
WARM_CAP_SECS = 60.0

SwitchHistoryRow = tuple[str | None, str, float | None, datetime | float | None]


def _ewma(previous: float | None, sample: float, alpha: float) -> float:
    return sample if previous is None else alpha * sample + (1 - alpha) * previous


class SwitchCostEstimator:
    """Estimated seconds of a switch (from, to), learnt from finished switches.

    Falls back from the pair to the target (any source of the same kind: cold starts and
    warm switches are never mixed) to `default_secs`.
    """

    def __init__(
        self,
        history: Iterable[SwitchHistoryRow] = (),
        *,
        default_secs: float = DEFAULT_SWITCH_SECS,
        alpha: float = EWMA_ALPHA,
        warm_cap_secs: float | None = WARM_CAP_SECS,
    ) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1]: {alpha!r}")
        self.default_secs = default_secs
        self.alpha = alpha
        self.warm_cap_secs = warm_cap_secs
        self._pairs: dict[tuple[str | None, str], float] = {}
        self._targets: dict[tuple[bool, str], float] = {}
        for from_model, to_model, total_ms, _finished in _in_order(history):
            self.observe(from_model, to_model, total_ms / 1000.0)

    def observe(self, from_model: str | None, to_model: str, seconds: float) -> None:
        """Record one finished switch (from None: a cold start)."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        cold = from_model is None
        if not cold and self.warm_cap_secs is not None:
            seconds = min(seconds, self.warm_cap_secs)
        pair = (from_model, to_model)
        self._pairs[pair] = _ewma(self._pairs.get(pair), seconds, self.alpha)
        target = (cold, to_model)
        self._targets[target] = _ewma(self._targets.get(target), seconds, self.alpha)

    def estimate(self, from_model: str | None, to_model: str) -> float:
        """Seconds: the pair's EWMA, else the target's, else the default."""
        pair = self._pairs.get((from_model, to_model))
        if pair is not None:
            return pair
        target = self._targets.get((from_model is None, to_model))
        return self.default_secs if target is None else target


def _timestamp(value: datetime | float | None) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return math.inf if value is None else float(value)


def _in_order(
    history: Iterable[SwitchHistoryRow],
) -> list[tuple[str | None, str, float, datetime | float | None]]:
    """Finished rows with a duration, oldest first (an EWMA depends on the order)."""
    rows = [
        (from_model, to_model, float(total_ms), finished)
        for from_model, to_model, total_ms, finished in history
        if total_ms is not None and finished is not None
    ]
    return sorted(rows, key=lambda row: _timestamp(row[3]))


# ── policies ────────────────────────────────────────────────────────────────────────────


def decide(
    snapshot: QueueSnapshot,
    config: PolicyConfig,
    costs: SwitchCostEstimator,
    *,
    now: float,
) -> Decision:
    """The configured policy's decision for one GPU group at `now`."""
    if config.policy_type == "cost_aware":
        return decide_cost_aware(snapshot, config, costs, now=now)
    if config.policy_type == "time_slice":
        return decide_time_slice(snapshot, config, costs, now=now)
    return decide_fifo(snapshot)


def decide_fifo(snapshot: QueueSnapshot) -> Decision:
    """Switch to the model of the oldest waiting request (unless it is the active one)."""
    waiting = [(m, d) for m, d in snapshot.demand.items() if d.waiting > 0]
    if not waiting:
        return Decision.wait(None, Reason.NO_DEMAND)
    model, _ = min(waiting, key=lambda item: (_arrival(item[1]), item[0]))
    if model == snapshot.active:
        return Decision.wait(None, Reason.ACTIVE_OLDEST)
    if snapshot.active is None:
        return Decision.switch(model, Reason.COLD_START)
    return Decision.switch(model, Reason.OLDEST_REQUEST)


def _stalest(snapshot: QueueSnapshot, max_wait: float, now: float) -> str | None:
    """The non-active model whose oldest request waited longest, if it reached `max_wait`."""
    for model, demand in snapshot.candidates():
        # `now >= arrival + max_wait`, not `now - arrival >= ...`: the same float expression
        # as the wake-up times computed below, so a look at exactly that time sees it stale.
        return model if now >= _arrival(demand) + max_wait else None
    return None


def _active_since(snapshot: QueueSnapshot, now: float) -> float:
    # An active model without a start time is treated as having just become active.
    return now if snapshot.active_since is None else snapshot.active_since


def _slice_end(
    snapshot: QueueSnapshot,
    config: PolicyConfig,
    costs: SwitchCostEstimator,
    target: str,
    now: float,
) -> float:
    """When the active model has served long enough to be preempted for a stale `target`.

    At least `min_quantum_ms`, and at least the estimated cost of that switch: a model that
    is preempted sooner than its switch costs spends more GPU time switching than serving.
    """
    cost = costs.estimate(snapshot.active, target)
    return _active_since(snapshot, now) + max(config.min_quantum, cost)


def _staleness(
    snapshot: QueueSnapshot, config: PolicyConfig, costs: SwitchCostEstimator, now: float
) -> Decision | None:
    """Preempt for a request over `max_wait_secs`, once the active model had its slice."""
    stale = _stalest(snapshot, config.max_wait, now)
    if stale is None:
        return None
    slice_end = _slice_end(snapshot, config, costs, stale, now)
    if now >= slice_end:
        return Decision.switch(stale, Reason.STALE)
    return Decision.wait(slice_end, Reason.QUANTUM)


def _preemptible_at(
    snapshot: QueueSnapshot,
    config: PolicyConfig,
    costs: SwitchCostEstimator,
    candidate: tuple[str, ModelDemand],
    now: float,
) -> float:
    """When `candidate`'s oldest request may preempt the active model as stale."""
    model, demand = candidate
    stale_at = _arrival(demand) + config.max_wait
    return max(stale_at, _slice_end(snapshot, config, costs, model, now))


def _before_policy(
    snapshot: QueueSnapshot,
    config: PolicyConfig,
    costs: SwitchCostEstimator,
    candidates: list[tuple[str, ModelDemand]],
    now: float,
) -> Decision | None:
    """What both coalescing policies decide alike: no demand, cold start, staleness."""
    if not candidates:
        return Decision.wait(None, Reason.NO_DEMAND)
    if snapshot.active is None:
        return Decision.switch(candidates[0][0], Reason.COLD_START)
    return _staleness(snapshot, config, costs, now)


def decide_cost_aware(
    snapshot: QueueSnapshot,
    config: PolicyConfig,
    costs: SwitchCostEstimator,
    *,
    now: float,
) -> Decision:
    """llmux's cost-aware coalescing (the module docstring says where it differs)."""
    candidates = snapshot.candidates()
    early = _before_policy(snapshot, config, costs, candidates, now)
    if early is not None:
        return early

    active = snapshot.active
    since = _active_since(snapshot, now)
    ready: list[tuple[int, float, str, Reason]] = []
    wake_ups: list[tuple[float, Reason]] = []
    for model, demand in candidates:
        oldest = _arrival(demand)
        stale_at = _preemptible_at(snapshot, config, costs, (model, demand), now)
        cost = costs.estimate(active, model)
        required = max(1, math.ceil(config.amortization_factor * cost))
        serving_end = since + cost
        coalesce_end = oldest + config.coalesce_window
        if now < serving_end:
            wake_ups.append((min(serving_end, stale_at), Reason.SERVING_WINDOW))
        elif demand.waiting >= required:
            ready.append((-demand.waiting, oldest, model, Reason.AMORTIZED))
        elif now < coalesce_end:
            wake_ups.append((min(coalesce_end, stale_at), Reason.COALESCING))
        elif snapshot.active_busy():
            wake_ups.append((stale_at, Reason.ACTIVE_BUSY))
        else:
            ready.append((-demand.waiting, oldest, model, Reason.COALESCED))
    if ready:
        _, _, model, reason = min(ready)
        return Decision.switch(model, reason)
    at, reason = min(wake_ups)
    return Decision.wait(at, reason)


def decide_time_slice(
    snapshot: QueueSnapshot,
    config: PolicyConfig,
    costs: SwitchCostEstimator,
    *,
    now: float,
) -> Decision:
    """Drain-first: stay while the active model has demand; staleness preempts after a quantum."""
    candidates = snapshot.candidates()
    early = _before_policy(snapshot, config, costs, candidates, now)
    if early is not None:
        return early
    if snapshot.active_busy():
        stale_at = min(_preemptible_at(snapshot, config, costs, c, now) for c in candidates)
        return Decision.wait(stale_at, Reason.ACTIVE_BUSY)
    min_active_end = _active_since(snapshot, now) + config.min_active_secs
    if now < min_active_end:
        return Decision.wait(min_active_end, Reason.MIN_ACTIVE)
    model, _ = min(candidates, key=lambda item: (-item[1].waiting, _arrival(item[1]), item[0]))
    return Decision.switch(model, Reason.DRAINED)
