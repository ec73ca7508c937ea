"""Prometheus metrics of llmux, correct across its web and worker processes.

Counters and histograms are written by whichever process observes them (a worker for a
switch, a web process for a request) into prometheus_client's multiprocess directory
(`PROMETHEUS_MULTIPROC_DIR`, set by the settings before anything imports the client);
`/metrics` merges them. Gauges of the current state (engine states, the active models, in
flight, queued, GPU memory) are read from the database and the GPU probe at scrape time
instead (models_app.metrics_exposition), so a process that died never leaves a stale value
behind. Histograms have real buckets.

The Rust llmux's names (`llmux_switch_total_seconds`, `llmux_switch_failures_total`,
`llmux_request_queue_wait_seconds`, ...) are exported beside ours, with its label values,
so its users' queries work here (docs/OBSERVABILITY.md, "llmux's metrics").
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar

from prometheus_client import Counter, Histogram

SWITCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CHECKPOINT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# The `from` of a switch onto an idle GPU group and the `to` of an operator's eviction:
# llmux's `from=""` on a cold start (Prometheus reads an empty value as no label at all).
NO_MODEL = ""
FAILED = "failed"  # SwapOutcome.FAILED, the `result` of a failed switch
WAITED_AFTER = 0.001  # llmux: a request "waited" when its wait for a slot passed 1 ms
# llmux's switch phases in ours: its sleep is our eviction; its wake timed the wake (or
# start) and the wait for the model to be ready together, our bring-up and readiness.
LLMUX_PHASES = {"sleep": ("evict",), "wake": ("bringup", "readiness")}

SWITCHES = Counter(
    "llmux_switches",
    "Switches by outgoing model, incoming model and result",
    ["from", "to", "result"],
)
SWITCH_SECONDS = Histogram(
    "llmux_switch_duration_seconds",
    "Whole switches, by incoming model",
    ["to"],
    buckets=SWITCH_BUCKETS,
)
SWITCH_TOTAL_SECONDS = Histogram(
    "llmux_switch_total_seconds",
    "Whole switches (llmux's name), by outgoing model, incoming model and result",
    ["from", "to", "result"],
    buckets=SWITCH_BUCKETS,
)
SWITCH_FAILURES = Counter(
    "llmux_switch_failures", "Failed switches, by the model they were to bring up", ["to"]
)
PHASE_SECONDS = Histogram(
    "llmux_switch_phase_seconds",
    "Switch phases (ours: drain, evict, bringup, readiness, ...; llmux's: sleep, wake)",
    ["phase", "from", "to"],
    buckets=SWITCH_BUCKETS,
)
ACTIVE_SECONDS = Histogram(
    "llmux_model_active_duration_seconds",
    "How long a model held its GPU before a switch",
    ["model"],
    buckets=(1, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600),
)
REQUESTS = Counter(
    "llmux_requests",
    "Gateway requests by model, HTTP status and whether they waited over 1 ms for a slot",
    ["model", "status", "waited"],
)
TTFB_SECONDS = Histogram(
    "llmux_time_to_first_byte_seconds",
    "From a request's arrival to its first byte",
    ["model"],
    buckets=REQUEST_BUCKETS,
)
QUEUE_WAIT_SECONDS = Histogram(
    "llmux_queue_wait_seconds",
    "Time a request waited for its model to become active",
    ["model"],
    buckets=REQUEST_BUCKETS,
)
REQUEST_QUEUE_WAIT_SECONDS = Histogram(
    "llmux_request_queue_wait_seconds",
    "Time a request waited for its model to become active (llmux's name)",
    ["model"],
    buckets=REQUEST_BUCKETS,
)
CHECKPOINT_BYTES = Counter(
    "llmux_checkpoint_bytes",
    "Bytes of CRIU images written (dump) and read (restore)",
    ["model", "operation"],
)
CHECKPOINT_SECONDS = Histogram(
    "llmux_checkpoint_duration_seconds",
    "CRIU dumps and restores",
    ["operation"],
    buckets=CHECKPOINT_BUCKETS,
)

# The seconds the current request has waited for a slot. The gateway backend's acquire
# adds to it and the gateway's request observer reads it when the request ends: both run
# in the request's one task (the gateway awaits acquire, it starts no task for it), and the
# observer is told only the model, the status and the time to the first byte.
_REQUEST_WAIT: ContextVar[float] = ContextVar("llmux_request_wait", default=0.0)


def observe_switch(
    from_model: str,
    to_model: str,
    result: str,
    total_s: float | None,
    phases_s: Mapping[str, float],
    active_s: float | None = None,
) -> None:
    """One finished switch (whatever its result) under our names and llmux's."""
    pair = (from_model or NO_MODEL, to_model or NO_MODEL)
    SWITCHES.labels(*pair, result).inc()
    if total_s is not None:
        SWITCH_SECONDS.labels(pair[1]).observe(total_s)
        SWITCH_TOTAL_SECONDS.labels(*pair, result).observe(total_s)
    if result == FAILED and to_model:
        SWITCH_FAILURES.labels(to_model).inc()
    for phase, seconds in with_llmux_phases(phases_s).items():
        PHASE_SECONDS.labels(phase, *pair).observe(seconds)
    if active_s is not None and from_model:
        ACTIVE_SECONDS.labels(from_model).observe(active_s)


def with_llmux_phases(phases_s: Mapping[str, float]) -> dict[str, float]:
    """Our phases, and llmux's sleep and wake made of those of them that ran."""
    phases = dict(phases_s)
    for name, ours in LLMUX_PHASES.items():
        ran = [phases_s[phase] for phase in ours if phase in phases_s]
        if ran:
            phases[name] = sum(ran)
    return phases


def note_request_wait(seconds: float) -> None:
    """The current request waited `seconds` for a slot (admitted or not); call in its task."""
    _REQUEST_WAIT.set(_REQUEST_WAIT.get() + seconds)


def observe_queue_wait(model: str, seconds: float) -> None:
    """A request admitted on `model` after waiting `seconds` for its slot."""
    QUEUE_WAIT_SECONDS.labels(model).observe(seconds)
    REQUEST_QUEUE_WAIT_SECONDS.labels(model).observe(seconds)


def observe_request(model: str, status: int, ttfb_s: float | None) -> None:
    """A gateway request ended (call in its task, after its waits were noted)."""
    waited = _REQUEST_WAIT.get() > WAITED_AFTER
    _REQUEST_WAIT.set(0.0)  # a task that serves another request next starts again at 0
    REQUESTS.labels(model, str(status), "true" if waited else "false").inc()
    if ttfb_s is not None:
        TTFB_SECONDS.labels(model).observe(ttfb_s)
