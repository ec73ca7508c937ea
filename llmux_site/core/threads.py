"""Thread hand-off tuning for llmux's processes (pure core)."""

from __future__ import annotations

import sys

# CPython lets a thread keep the GIL for up to 5 ms while another waits for it. The web
# and worker processes each run an event loop beside one database thread: with the
# default, a message that arrives while the database thread runs ORM code waits up to
# 5 ms to be read, several times per switch. 0.5 ms costs a little throughput in
# CPU-bound code neither process has.
HANDOFF_SECONDS = 0.0005


def quick_thread_handoff() -> None:
    """Make the GIL change hands within HANDOFF_SECONDS (process-wide, inherited by fork)."""
    sys.setswitchinterval(HANDOFF_SECONDS)
