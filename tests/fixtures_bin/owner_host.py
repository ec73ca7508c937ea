"""A host as `llmux worker` makes it: one engine owner and two forked worker processes.

    python -m tests.fixtures_bin.owner_host CRIU WORKDIR [--no-owner]

Worker A spawns a simulated engine on a Unix socket and then idles (alive, never reaping
anything); worker B dumps that engine with CRIU and restores it, as two django-q2
processes taking a switch each would. Prints one JSON line: the engine's pid before and
after, whether the restored engine answers, and any error. With `--no-owner` the host
does not own the engines (the code before issue 13), so the dumped engine stays a zombie
of worker A and its restore cannot get the pid back.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from llmux_site.core import engine_owner
from llmux_site.core.criu import Criu, CriuError
from llmux_site.core.processes import EngineProcess, ProcessSpec, live_process, spawn
from llmux_site.core.supervisor import stop


def healthy(sock: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(5)
                conn.connect(sock)
                conn.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                if b" 200 " in conn.recv(64).split(b"\r\n", 1)[0]:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def worker_a(work: Path, out: Any, idle: Any) -> None:
    sock = str(work / "e.sock")
    spec = ProcessSpec(
        argv=[
            sys.executable,
            "-m",
            "llmux_site.simulator",
            "serve",
            "sim/owner",
            "--uds",
            sock,
            "--sim-weights-bytes",
            "1MiB",
            "--sim-startup-seconds",
            "0",
            "--sim-cache-dir",
            str(work / "cache"),
            "--sim-ledger-dir",
            str(work / "ledger"),
        ],
        log_path=work / "engine.log",
    )
    engine = spawn(spec)
    out.put(
        {
            "pid": engine.pid,
            "create_time": engine.create_time,
            "pgid": engine.pgid,
            "healthy": healthy(sock),
        }
    )
    idle.wait(120)  # alive and busy elsewhere, as a django-q2 worker between tasks


def worker_b(criu_binary: str, work: Path, engine: dict[str, Any], out: Any) -> None:
    process = EngineProcess(engine["pid"], engine["create_time"], engine["pgid"])
    criu = Criu(criu_binary)
    result: dict[str, Any] = {"before": engine["pid"]}
    try:
        dumped = criu.dump(process, work / "image")
        restored = criu.restore(dumped.images_dir).process
        result |= {"after": restored.pid, "healthy": healthy(str(work / "e.sock"))}
        stop(restored, grace=5)
    except CriuError as exc:
        result["error"] = str(exc)[-2000:]
    out.put(result)


def main() -> int:
    criu_binary, work = sys.argv[1], Path(sys.argv[2])
    if "--no-owner" not in sys.argv:
        engine_owner.become_owner(work / "exits")
    fork = multiprocessing.get_context("fork")
    results, idle = fork.Queue(), fork.Event()
    a = fork.Process(target=worker_a, args=(work, results, idle))
    a.start()
    engine = results.get(timeout=120)
    b = fork.Process(target=worker_b, args=(criu_binary, work, engine, results))
    b.start()
    outcome = results.get(timeout=300)
    b.join(60)
    idle.set()
    a.join(60)
    live = live_process(engine["pid"], engine["create_time"])
    outcome["engine_healthy_at_start"] = engine["healthy"]
    deadline = time.monotonic() + 5  # the owner reaps about ten times a second
    while _zombie_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    outcome["zombies"] = _zombie_children()
    if live is not None:  # whatever happened, leave nothing running
        stop(EngineProcess(engine["pid"], engine["create_time"], engine["pgid"]), grace=5)
    print(json.dumps(outcome))
    return 0


def _zombie_children() -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if fields[0] == b"Z" and int(fields[1]) == os.getpid():
                found.append(int(name))
    return found


if __name__ == "__main__":
    sys.exit(main())
