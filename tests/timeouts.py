"""Engine call timeouts for tests: room for calls that must succeed, short ones for hangs.

A sleep that takes milliseconds here took over a second on a loaded 2-core CI box, and a
1 s limit turned it into an escalation the test did not expect. So a call a test expects
to succeed gets ROOMY's limit, and a test of a hang shortens only the call that hangs.
"""

from __future__ import annotations

import dataclasses

from llmux_site.core.engine_client import CallTimeouts

ROOMY = CallTimeouts(health=10, control=15, sleep=30, wake=30, rpc=30, inference=30, probe=15)


def hanging(**seconds: float) -> CallTimeouts:
    """ROOMY, with the calls named (e.g. `sleep=1`) given a short limit that a hang hits."""
    return dataclasses.replace(ROOMY, **seconds)
