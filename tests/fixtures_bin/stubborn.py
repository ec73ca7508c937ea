"""An engine that ignores SIGTERM and has a child in its process group that ignores it too.

Usage: stubborn.py READY_FILE. Writes "PARENT_PID CHILD_PID" to READY_FILE once both
ignore SIGTERM, then sleeps. With --leader-exits the parent exits right after, leaving
the child alone in the group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.argv[1] == "--child":
        with open(sys.argv[2], "w") as ready:
            ready.write(str(os.getpid()))
        while True:
            time.sleep(60)
    ready_file = sys.argv[1]
    child_ready = ready_file + ".child"
    child = subprocess.Popen([sys.executable, __file__, "--child", child_ready])
    while not os.path.exists(child_ready) or not Path(child_ready).read_text():
        time.sleep(0.01)
    tmp = ready_file + ".tmp"
    with open(tmp, "w") as ready:
        ready.write(f"{os.getpid()} {child.pid}")
    os.rename(tmp, ready_file)
    if "--leader-exits" in sys.argv:
        return
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
