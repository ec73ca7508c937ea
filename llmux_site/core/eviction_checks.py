"""Checks around an eviction: may the engine sleep at all, and did the GPU memory come back.

Pure core: the engine's command line and a memory probe in, a verdict (or an error that
makes the eviction escalate to stop) out. Honest about what it cannot see: where no GPU
probe applies (vLLM's CPU build, a host without NVML) and the engine lives on, the verdict
is "unknown", never "freed".
"""

from __future__ import annotations

from collections.abc import Sequence

import psutil

from llmux_site.core.eviction_policy import ProcessAction
from llmux_site.core.launch import sleep_mode_in
from llmux_site.core.processes import UNREADABLE, EngineProcess
from llmux_site.core.switching import EngineTarget, MemoryCheck

__all__ = [
    "MEMORY_LEFT_RATIO",
    "MemoryNotFreed",
    "SleepModeUnavailable",
    "check_sleep_mode",
    "verify_memory",
]

# Memory left after an eviction may be at most this share of what the engine held before
# (or the plan's absolute tolerance, whichever is larger).
MEMORY_LEFT_RATIO = 0.2
# Process actions after which none of the engine's processes runs any more.
ENDING_ACTIONS = (ProcessAction.STOP, ProcessAction.CHECKPOINT)


class SleepModeUnavailable(Exception):
    """The eviction offloads or discards weights, but the engine runs without sleep mode."""


class MemoryNotFreed(Exception):
    """The GPU probe sees the engine still holding its memory after the eviction."""


def check_sleep_mode(target: EngineTarget, process: EngineProcess) -> None:
    """Refuse to call /sleep on an engine started without sleep mode.

    Its command line tells (the live one; the one it was started from if unreadable). Not
    worth a try: vLLM's CPU build in dev mode answers /sleep 200, frees nothing, and then
    hangs the next request.
    """
    if target.eviction.vllm_sleep_level is None:
        return
    try:
        argv: Sequence[str] = psutil.Process(process.pid).cmdline()
    except UNREADABLE:
        argv = target.spec.argv
    if not sleep_mode_in(argv):
        raise SleepModeUnavailable(
            "the engine runs without vLLM sleep mode (no --enable-sleep-mode: its platform "
            "has none, see LLMUX_SLEEP_MODE, or its model's own eviction does not sleep)"
        )


def _all_gone(pids: Sequence[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except UNREADABLE:
            continue
    return True


def verify_memory(
    action: ProcessAction,
    before: int | None,
    after: int | None,
    *,
    pids: Sequence[int],
    tolerance: int,
) -> MemoryCheck:
    """How the eviction's freeing of GPU memory is known; MemoryNotFreed if it was not.

    With a probe reading before and after, the memory must have come back. Without one, an
    engine whose processes are all gone holds nothing; one that lives on is not verified.
    """
    if before is not None and after is not None:
        allowed = max(tolerance, int(before * MEMORY_LEFT_RATIO))
        if after > allowed:
            raise MemoryNotFreed(
                f"GPU memory was not freed: the engine still holds {after} bytes "
                f"(held {before} before; at most {allowed} may remain)"
            )
        return MemoryCheck.FREED
    if action in ENDING_ACTIONS and _all_gone(pids):
        return MemoryCheck.EXITED
    return MemoryCheck.UNKNOWN
