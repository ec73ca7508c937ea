"""Start one engine and exit at once, so the engine is handed to the host's engine owner.

    python -m llmux_site.core.engine_launcher < SPEC_JSON

Reads a `ProcessSpec` as JSON on stdin, spawns it exactly as `processes.spawn` does (a
session of its own, stdin /dev/null, an O_APPEND log), prints the engine's identity
(`{"pid", "create_time", "pgid"}`, or `{"error"}`) as one JSON line and exits without
waiting: the engine, orphaned, is re-parented to the nearest child subreaper among its
ancestors, the owner (engine_owner). Pure core.
"""

from __future__ import annotations

import json
import sys

from llmux_site.core.engine_owner import spec_from_json
from llmux_site.core.processes import SupervisorError, spawn

__all__ = ["main"]


def main() -> int:
    try:
        spec = spec_from_json(sys.stdin.read())
        engine = spawn(spec)
    except (SupervisorError, ValueError, KeyError, TypeError) as exc:
        print(json.dumps({"error": str(exc) or type(exc).__name__}))
        return 1
    print(json.dumps({"pid": engine.pid, "create_time": engine.create_time, "pgid": engine.pgid}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
