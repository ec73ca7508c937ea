"""The swap history as the dashboard shows it: rows whose phases add up to their total,
with policy, actor and operation, errors whose end (the log's last lines) is kept; and the
history's filters, parsed strictly (a filter that cannot apply is an error, never ignored).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.http import QueryDict

from dashboard import params
from models_app.models import (
    PHASES,
    BringUp,
    OperationKind,
    SwapEvent,
    SwapOutcome,
    SwapTrigger,
)

PHASE_LABELS = {"bringup": "bring-up"}
# Read once: a TextChoices' `choices` is a new list at each use, and a page has 50 rows.
OPERATIONS = dict(OperationKind.choices)
TRIGGERS = dict(SwapTrigger.choices)
OUTCOMES = dict(SwapOutcome.choices)
BRINGUPS = dict(BringUp.choices)
# What lies between the timed phases: the engine state writes and reads that join them.
OTHER = "other"
# An error is shown whole up to this; a longer one keeps its start (the message) and its
# end (the engine log's last lines, where the cause is).
ERROR_HEAD = 600
ERROR_TAIL = 3400
SUMMARY_CHARS = 200

SWAP_FILTERS = ("model", "outcome", "trigger", "since", "until")


@dataclass(frozen=True)
class PhaseTime:
    """A named part of a swap's time (a phase, the queue before it, `other`) or its total."""

    name: str
    label: str
    ms: float

    # Formatted here, not with the floatformat filter: ten of them a row made the filter
    # most of the history page's render time (scripts/bench_dashboard.py).
    @property
    def shown(self) -> str:
        return f"{self.ms:,.0f}"

    @property
    def exact(self) -> str:
        return f"{self.ms:.3f}"


@dataclass(frozen=True)
class SwapRow:
    """One swap as a row of the history (the model page's and the history page's)."""

    swap: SwapEvent
    operation: str
    trigger: str
    outcome: str
    policy: list[str]
    phases: list[PhaseTime]
    total: PhaseTime | None  # the queue and the switch: what `phases` add up to
    error_summary: str
    error_text: str


def swap_rows(swaps: Iterable[SwapEvent]) -> list[SwapRow]:
    return [swap_row(swap) for swap in swaps]


def swap_row(swap: SwapEvent) -> SwapRow:
    phases, total = phase_times(swap)
    summary, text = error_parts(swap.error)
    return SwapRow(
        swap=swap,
        operation=OPERATIONS.get(swap.operation, swap.operation),
        trigger=TRIGGERS.get(swap.trigger, swap.trigger),
        outcome=OUTCOMES.get(swap.outcome, swap.outcome),
        policy=policy_lines(swap),
        phases=phases,
        total=None if total is None else PhaseTime("total", "total", total),
        error_summary=summary,
        error_text=text,
    )


def phase_times(swap: SwapEvent) -> tuple[list[PhaseTime], float | None]:
    """The queue wait, every phase that ran, and what lies between them, in order; and
    their sum, the swap's total (None while it runs)."""
    parts = [] if swap.queue_ms is None else [PhaseTime("queue", "queue", swap.queue_ms)]
    timed = 0.0
    for name in PHASES:
        ms = getattr(swap, f"{name}_ms")
        if ms is not None:
            parts.append(PhaseTime(name, PHASE_LABELS.get(name, name), ms))
            timed += ms
    if swap.total_ms is None:
        return parts, None
    # Phases are timed inside the switch's total, so the rest is never negative but for
    # clock rounding; a swap recorded before check and settle had columns keeps them here.
    parts.append(PhaseTime(OTHER, OTHER, max(0.0, swap.total_ms - timed)))
    return parts, max(swap.total_ms, timed) + (swap.queue_ms or 0.0)


def policy_lines(swap: SwapEvent) -> list[str]:
    """How the outgoing model was evicted and how the target came up."""
    lines = []
    if swap.eviction_weights or swap.eviction_process:
        how = " · ".join(
            p.replace("_", " ") for p in (swap.eviction_weights, swap.eviction_process) if p
        )
        line = f"evict {swap.from_name}: {how}" if swap.from_name else f"evict: {how}"
        if swap.escalated:
            line += ", escalated to stop"
        lines.append(line)
    if swap.bringup:
        lines.append(f"bring up {swap.to_name}: {BRINGUPS.get(swap.bringup, swap.bringup).lower()}")
    return lines


def error_parts(error: str) -> tuple[str, str]:
    """(its first line, shortened; the text to show): the end is always kept."""
    if not error:
        return "", ""
    first = error.strip().splitlines()[0] if error.strip() else error
    summary = first if len(first) <= SUMMARY_CHARS else first[: SUMMARY_CHARS - 1] + "…"
    if len(error) <= ERROR_HEAD + ERROR_TAIL:
        return summary, error
    left_out = len(error) - ERROR_HEAD - ERROR_TAIL
    return summary, f"{error[:ERROR_HEAD]}\n… {left_out:,} characters …\n{error[-ERROR_TAIL:]}"


def swap_filters(query: QueryDict) -> dict[str, Any]:
    """The history's filters from a query; a parameter it does not know is refused."""
    params.known(query, (*SWAP_FILTERS, "page"))
    since = params.when("since", query.get("since", "").strip())
    until = params.when("until", query.get("until", "").strip())
    if since and until and since >= until:
        raise params.BadParameter("until: must be later than since")
    return {
        "model": params.text("model", query.get("model", ""), max_length=128),
        "outcome": params.choice("outcome", query.get("outcome", ""), SwapOutcome.values),
        "trigger": params.choice("trigger", query.get("trigger", ""), SwapTrigger.values),
        "since": since,
        "until": until,
    }


def page_number(query: QueryDict, pages: int) -> int:
    """The page asked for (1 when none), which must exist."""
    value = query.get("page", "")
    if not value:
        return 1
    return params.whole("page", value, low=1, high=max(pages, 1))
