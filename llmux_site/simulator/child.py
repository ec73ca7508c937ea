"""A stand-in for vLLM's engine-core / tensor-parallel worker processes: it only waits to die.

It exits when its parent does (PR_SET_PDEATHSIG where Linux offers it, polling otherwise), so a
test can check that stopping an engine's process group leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the polling loop below still notices


def main(argv: list[str]) -> int:
    parent = int(argv[1])
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # like vLLM workers: the parent decides
    while os.getppid() == parent:
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
