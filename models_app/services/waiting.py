"""Wait for a queued lifecycle operation to finish, for commands that block on the worker.

`llmux_checkpoint`, `llmux_restore` and `llmux_validate` queue an operation (a
SwitchRequest) and block until a worker carries it out; a failure or a worker that never
comes is an OperationError whose message says what to do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from models_app.models import OPEN_SWITCH_STATUSES, SwapEvent, SwitchRequest, SwitchStatus

POLL = 0.2  # seconds between reads of the request's row


class OperationError(Exception):
    """The operation could not be done; the message says why and what to do."""


@dataclass(frozen=True)
class Finished:
    """A finished operation: its request, and the swap it ran as (none if it was skipped)."""

    request: SwitchRequest
    swap: SwapEvent | None


def wait_for(request: SwitchRequest, timeout: float, what: str) -> Finished:
    """Wait until a worker has finished `request`; raise with its error if it failed."""
    deadline = time.monotonic() + timeout
    while request.status in OPEN_SWITCH_STATUSES:
        if time.monotonic() > deadline:
            hint = " Is a worker running (`llmux serve` or `llmux worker`)?"
            raise OperationError(
                f"{what} is still {request.status} after {timeout:.0f} s."
                + (hint if request.status == SwitchStatus.PENDING else "")
            )
        time.sleep(POLL)
        request.refresh_from_db()
    swap = SwapEvent.objects.filter(pk=request.swap_id).first() if request.swap_id else None
    if request.status == SwitchStatus.FAILED:
        raise OperationError(f"{what} failed: {request.error}")
    return Finished(request, swap)
