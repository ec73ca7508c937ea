"""A stand-in for vLLM's engine-core / tensor-parallel worker processes: it only waits to die.

It ends with a signal to the engine's process group (or its engine's own stop), and not when
the engine's process dies: vLLM 0.32's engine core and its worker were seen running on,
holding their memory, after a kill -9 of the API server. So a test can check that llmux
ends what is left of an engine whose leader died, not only that a group stop leaves nothing.
"""

from __future__ import annotations

import signal
import sys


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # like vLLM workers: the parent decides
    while True:
        signal.pause()  # SIGTERM or SIGKILL end it (default actions)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
