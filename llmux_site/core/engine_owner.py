"""One owner of the engine processes per host: the process that reaps every engine.

django-q2 runs each lifecycle task in whichever worker process is free. An engine spawned
by one worker process and dumped by CRIU from another stayed a zombie of its spawner
(nothing there waited for it), so its pid was never free again and the restore of its image
failed ("Can't fork for N: File exists"). So engines are parented by one long-lived process
per host, the *owner*: `llmux worker`'s own process, the ancestor of every worker process
of its cluster. It is a child subreaper, so

- an engine is spawned through a short-lived launcher (`python -m
  llmux_site.core.engine_launcher`) that starts it and exits at once, which hands the engine
  to the nearest subreaper ancestor: the owner;
- a tree `criu restore --restore-detached` brings back is likewise handed to the owner
  once criu exits (no worker process may be a subreaper itself);
- the owner reaps every engine process the moment it ends (so a dumped tree's pids are free
  for its restore) and writes each engine leader's exit code where any worker process reads
  it (`exit_code_of`);
- when an engine's leader ends, the owner kills the rest of its process group first: a
  real vLLM's engine core and workers outlive a killed API server.

Processes that are not under an owner (tests that drive the lifecycle in-process, scripts)
spawn engines as their own children, as before. Pure core: no Django; the worker command
calls `become_owner` before its cluster forks.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

from llmux_site.core.processes import (
    EngineProcess,
    ProcessSpec,
    hand_engines_to,
    set_child_subreaper,
)

__all__ = [
    "LAUNCHER",
    "OwnerError",
    "become_owner",
    "exit_code_of",
    "owner_pid",
    "reap_engines",
    "spawn_through_launcher",
    "spec_from_json",
    "spec_to_json",
    "under_owner",
]

LAUNCHER: Final = (sys.executable, "-m", "llmux_site.core.engine_launcher")
REAP_INTERVAL: Final = 0.1  # seconds between reaping passes of the owner
KEEP_EXIT_CODES: Final = 512  # newest exit-code files kept
LAUNCH_TIMEOUT: Final = 60.0
# psutil and /proc give create times with clock-tick (10 ms) granularity.
CREATE_TIME_TOLERANCE: Final = 0.01

_owner_pid: int | None = None
_exits_dir: Path | None = None
_reaper: threading.Thread | None = None
_lock = threading.Lock()


class OwnerError(RuntimeError):
    """The launcher could not start an engine."""


def owner_pid() -> int | None:
    """The pid of this host's engine owner when this process runs under one."""
    return _owner_pid


def under_owner() -> bool:
    """Whether engines started here go to an owner (this process is one of its workers)."""
    return _owner_pid is not None and _owner_pid != os.getpid()


def become_owner(exits_dir: Path) -> None:
    """Make this process the host's engine owner (before it forks its workers).

    Idempotent. Forked children inherit the owner's pid and exits directory, so they spawn
    through the launcher; the subreaper flag itself is not inherited by a fork.
    """
    global _owner_pid, _exits_dir, _reaper
    with _lock:
        exits_dir.mkdir(parents=True, exist_ok=True)
        _exits_dir = exits_dir
        _owner_pid = os.getpid()
        set_child_subreaper(True)
        hand_engines_to(_Owned())
        if _reaper is None or not _reaper.is_alive():
            _reaper = threading.Thread(target=_reap_forever, name="llmux-owner", daemon=True)
            _reaper.start()


def _reap_forever() -> None:
    while True:
        with contextlib.suppress(OSError):
            reap_engines()
        time.sleep(REAP_INTERVAL)


def _stat(pid: str) -> tuple[bytes, int, int, int] | None:
    """(state, ppid, pgrp, start time in clock ticks) of one process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split(b" ")
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _create_time(start_ticks: int) -> float:
    with open("/proc/stat", "rb") as stat_file:
        boot = next(int(line.split()[1]) for line in stat_file if line.startswith(b"btime"))
    return boot + start_ticks / os.sysconf("SC_CLK_TCK")


def reap_engines() -> list[int]:
    """Reap the owner's exited engine processes; the pids reaped.

    Only children in a process group other than the owner's own: engines run in sessions
    of their own, while the owner's other children (its cluster's processes) share its
    group and are waited for by their own handles.
    """
    me, my_group = os.getpid(), os.getpgrp()
    reaped = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _stat(name)
        if stat is None:
            continue
        state, ppid, pgrp, start = stat
        if state != b"Z" or ppid != me or pgrp == my_group:
            continue
        pid = int(name)
        created = _create_time(start)
        if pid == pgrp:
            _end_group(pgrp)
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if done == pid:
            reaped.append(pid)
            if pid == pgrp:  # a group leader: an engine (or a restored engine's root)
                _record_exit(pid, created, os.waitstatus_to_exitcode(status))
    return reaped


def _end_group(pgid: int) -> None:
    """An engine whose leader died is dead: kill what is left of its process group.

    vLLM's engine core and workers run on after a kill -9 of its API server, holding their
    memory (2 GB of a CPU engine; GPU memory on a GPU), and nothing else would stop them.
    Done before the leader is reaped: while its zombie holds the number, the group can be
    no other's.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _record_exit(pid: int, create_time: float, code: int) -> None:
    if _exits_dir is None:
        return
    path = _exits_dir / str(pid)
    tmp = _exits_dir / f".{pid}.tmp"
    tmp.write_text(f"{create_time:.2f} {code}\n")
    tmp.replace(path)
    entries = sorted(_exits_dir.iterdir(), key=lambda p: p.stat().st_mtime)
    for old in entries[:-KEEP_EXIT_CODES]:
        old.unlink(missing_ok=True)


def exit_code_of(pid: int, create_time: float) -> int | None:
    """The exit code the owner recorded for the engine `(pid, create_time)`, if any."""
    if _exits_dir is None:
        return None
    try:
        recorded, code = (_exits_dir / str(pid)).read_text().split()
    except (OSError, ValueError):
        return None
    if abs(float(recorded) - create_time) > CREATE_TIME_TOLERANCE + 0.01:
        return None  # an earlier process with the same pid number
    return int(code)


class _Owned:
    """The `EngineParent` of the owner's workers: engines go to the owner."""

    def spawn(self, spec: ProcessSpec) -> EngineProcess | None:
        if not under_owner():
            return None  # the owner itself starts engines as its own children
        identity = spawn_through_launcher(spec_to_json(spec))
        return EngineProcess(
            pid=int(identity["pid"]),
            create_time=float(identity["create_time"]),
            pgid=int(identity["pgid"]),
            argv=tuple(spec.argv),
            log_path=str(spec.log_path),
        )

    def exit_code(self, proc: EngineProcess) -> int | None:
        return exit_code_of(proc.pid, proc.create_time)


def spec_to_json(spec: ProcessSpec) -> str:
    """The spec as the launcher reads it."""
    return json.dumps(
        {
            "argv": list(spec.argv),
            "log_path": str(spec.log_path),
            "env": dict(spec.env),
            "base_env": None if spec.base_env is None else dict(spec.base_env),
            "cwd": None if spec.cwd is None else str(spec.cwd),
            "tmp_dir": spec.tmp_dir,
            "uds": spec.uds,
        }
    )


def spec_from_json(text: str) -> ProcessSpec:
    """The launcher's side of `spec_to_json`."""
    data = json.loads(text)
    return ProcessSpec(
        argv=list(data["argv"]),
        log_path=data["log_path"],
        env=dict(data.get("env") or {}),
        base_env=data.get("base_env"),
        cwd=data.get("cwd"),
        tmp_dir=data.get("tmp_dir"),
        uds=data.get("uds"),
    )


def spawn_through_launcher(spec_json: str) -> dict[str, Any]:
    """Start an engine through the launcher, which exits once the engine runs; the
    engine's identity as the launcher printed it (`pid`, `create_time`, `pgid`)."""
    try:
        done = subprocess.run(
            list(LAUNCHER),
            input=spec_json,
            capture_output=True,
            text=True,
            timeout=LAUNCH_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OwnerError(f"the engine launcher did not run: {exc}") from exc
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise OwnerError(
            f"the engine launcher failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
        ) from None
    if not isinstance(answer, dict) or "error" in answer:
        raise OwnerError(str(answer.get("error") if isinstance(answer, dict) else answer))
    return dict(answer)
