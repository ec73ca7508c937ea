"""Prometheus metrics of llmux, correct across its web and worker processes.

Counters and histograms are written by whichever process observes them (a worker for a
switch, a web process for a request) into prometheus_client's multiprocess directory
(`PROMETHEUS_MULTIPROC_DIR`, set by the settings before anything imports the client);
`/metrics` merges them. Gauges of the current state (engine states, in flight, queued,
GPU memory) are read from the database and the GPU probe at scrape time instead
(models_app.metrics_exposition), so a process that died never leaves a stale value behind.
Histograms have real buckets.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SWITCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CHECKPOINT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
NONE = "none"  # the `from` of a switch onto an idle GPU group

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
PHASE_SECONDS = Histogram(
    "llmux_switch_phase_seconds",
    "Switch phases (drain, evict, bringup, readiness, ...)",
    ["phase"],
    buckets=SWITCH_BUCKETS,
)
ACTIVE_SECONDS = Histogram(
    "llmux_model_active_duration_seconds",
    "How long a model held its GPU before a switch",
    ["model"],
    buckets=(1, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600),
)
REQUESTS = Counter(
    "llmux_requests", "Gateway requests by model and HTTP status", ["model", "status"]
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


def observe_switch(
    from_model: str,
    to_model: str,
    result: str,
    total_s: float | None,
    phases_s: dict[str, float],
    active_s: float | None = None,
) -> None:
    SWITCHES.labels(from_model or NONE, to_model or NONE, result).inc()
    if total_s is not None:
        SWITCH_SECONDS.labels(to_model or NONE).observe(total_s)
    for phase, seconds in phases_s.items():
        PHASE_SECONDS.labels(phase).observe(seconds)
    if active_s is not None and from_model:
        ACTIVE_SECONDS.labels(from_model).observe(active_s)


def observe_request(model: str, status: int, ttfb_s: float | None, wait_s: float | None) -> None:
    REQUESTS.labels(model, str(status)).inc()
    if ttfb_s is not None:
        TTFB_SECONDS.labels(model).observe(ttfb_s)
    if wait_s is not None:
        QUEUE_WAIT_SECONDS.labels(model).observe(wait_s)
