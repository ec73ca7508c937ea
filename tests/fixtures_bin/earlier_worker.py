"""Plays another worker that starts an engine: ``earlier_worker.py LOG [--stay] -- ARGV...``.

Prints the engine's identity as JSON. Without --stay it then exits without stopping the
engine (a worker that went away); with --stay it lives on as the engine's parent until
the engine exits (another worker on the same host), reaping it.
"""

from __future__ import annotations

import asyncio
import json
import sys

from llmux_site.core import processes, supervisor


def main() -> None:
    separator = sys.argv.index("--")
    options, argv = sys.argv[1:separator], sys.argv[separator + 1 :]
    proc = processes.spawn(processes.ProcessSpec(argv=argv, log_path=options[0]))
    record = {"pid": proc.pid, "create_time": proc.create_time, "pgid": proc.pgid}
    print(json.dumps(record), flush=True)
    if "--stay" in options:
        asyncio.run(supervisor.wait_exit(proc))


if __name__ == "__main__":
    main()
