"""The simulated GPU's utilisation: the share of each second the engine had a request in
progress, written to the GPU ledger, where the GPU probe turns it into telemetry.

NVML defines a real GPU's utilisation the same way (the percent of a sample period during
which a kernel ran), so a dashboard shows a simulated engine serving one slow stream as
fully busy, as it would show a real one.
"""

from __future__ import annotations

import asyncio
import time

from llmux_site.core.gpu_ledger import LedgerWriter
from llmux_site.simulator.inflight import Inflight

PERIOD_S = 1.0  # NVML samples a GPU's utilisation over 1/6 s to 1 s, depending on the chip


def busy_percent(busy_s: float, elapsed_s: float) -> int:
    """`busy_s` of `elapsed_s` as a whole percent, 0-100."""
    if elapsed_s <= 0:
        return 0
    return min(100, max(0, round(100 * busy_s / elapsed_s)))


async def report_utilization(
    inflight: Inflight, ledger: LedgerWriter, *, period_s: float = PERIOD_S
) -> None:
    """Until cancelled: every `period_s`, how busy the engine was during it, to the ledger
    (which rewrites its file only when the figure changed)."""
    busy, at = inflight.busy_seconds(), time.monotonic()
    while True:
        await asyncio.sleep(period_s)
        now_busy, now = inflight.busy_seconds(), time.monotonic()
        ledger.report_utilization(busy_percent(now_busy - busy, now - at))
        busy, at = now_busy, now
