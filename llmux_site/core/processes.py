"""Engine processes: spawning, identity, adoption and process-group inspection.

An engine is identified by ``(pid, create_time)``, never by its pid alone: engines outlive
the worker that started them, and a pid number is reused by the kernel once its process is
gone. Everything here works for processes that are not our children (adopted after a
worker restart, or restored by CRIU with ``--restore-detached``); for our own children we
also keep the ``Popen`` handle so they are reaped and their exit status is known.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import psutil

from llmux_site.core.engine_files import prepare_private_tmp, remove_stale_socket
from llmux_site.core.engine_log import run_marker_line

__all__ = [
    "CREATE_TIME_TOLERANCE",
    "EngineExitedError",
    "EngineParent",
    "EngineProcess",
    "ProcessSpec",
    "SpawnError",
    "StartupTimeoutError",
    "StopFailedError",
    "SupervisorError",
    "adopt",
    "attach",
    "exit_code",
    "group_members",
    "group_processes",
    "hand_engines_to",
    "inherit_group",
    "is_alive",
    "live_process",
    "process_tree",
    "process_trees",
    "read_log_tail",
    "reap_orphans",
    "reap_stray_children",
    "set_child_subreaper",
    "spawn",
    "spawned_here",
    "start_reaper",
    "unreaped_child",
]

# psutil derives create_time from clock ticks since boot (10 ms granularity), so two
# readings of the same process can differ by one tick after float rounding.
CREATE_TIME_TOLERANCE = 0.01
# psutil raises a bare FileNotFoundError instead of NoSuchProcess when /proc/PID/stat is
# gone at one read and back at the next: the pid was reused, or a CRIU restore recreated
# the task under its old pid, in between. Either way the process asked about is not there.
VANISHED = (psutil.NoSuchProcess, FileNotFoundError)
# Any reason psutil could not tell us about a process (gone, a zombie, not ours to read).
UNREADABLE = (psutil.Error, FileNotFoundError)

_LOG_MODE = 0o640
_PR_SET_CHILD_SUBREAPER = 36


class SupervisorError(Exception):
    """Base class for everything the process supervisor raises."""


class SpawnError(SupervisorError):
    """The engine could not be started at all (bad argv, missing program, bad log path)."""


class EngineExitedError(SupervisorError):
    """The engine process died while we were waiting for it."""

    def __init__(self, pid: int, exit_code: int | None, log_tail: str) -> None:
        self.pid = pid
        self.exit_code = exit_code
        self.log_tail = log_tail  # the cause found in its log (engine_log.failure_cause)
        status = "with an unknown status" if exit_code is None else f"with code {exit_code}"
        message = f"engine process {pid} exited {status}"
        if log_tail:
            message += f"; its log says:\n{log_tail}"
        super().__init__(message)


class StartupTimeoutError(SupervisorError):
    """The engine was still alive but not healthy when the startup timeout ran out."""

    def __init__(self, pid: int, timeout: float, last_error: str | None = None) -> None:
        self.pid = pid
        self.timeout = timeout
        self.last_error = last_error
        message = f"engine process {pid} was not healthy after {timeout:g} s"
        if last_error:
            message += f" (last health check error: {last_error})"
        super().__init__(message)


class StopFailedError(SupervisorError):
    """Processes of the engine's group survived SIGKILL (e.g. stuck in uninterruptible I/O)."""

    def __init__(self, pgid: int, survivors: Sequence[int]) -> None:
        self.pgid = pgid
        self.survivors = tuple(survivors)
        super().__init__(
            f"process group {pgid} still has processes {list(self.survivors)} after SIGKILL"
        )


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """What to start: an argv list (never a shell string), its environment and log file."""

    argv: Sequence[str]
    log_path: str | os.PathLike[str]
    env: Mapping[str, str] = field(default_factory=dict)
    # None means "this process's environment"; pass a mapping to start from something else.
    base_env: Mapping[str, str] | None = None
    cwd: str | os.PathLike[str] | None = None
    # The engine's own files (engine_files): a private TMPDIR, created empty at spawn, and
    # the Unix socket it will listen on, removed before spawn when nothing listens on it.
    tmp_dir: str | None = None
    uds: str | None = None


@dataclass(frozen=True, slots=True)
class EngineProcess:
    """A running (or once running) engine; ``identity`` is what tells it apart from pid reuse."""

    pid: int
    create_time: float
    pgid: int
    argv: tuple[str, ...] = ()
    log_path: str | None = None

    @property
    def identity(self) -> tuple[int, float]:
        return (self.pid, self.create_time)


class _Children:
    """Popen handles of the engines this process spawned, and exit codes of reaped ones."""

    _MAX_REMEMBERED = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[tuple[int, float], subprocess.Popen[bytes]] = {}
        self._codes: OrderedDict[tuple[int, float], int] = OrderedDict()

    def add(self, key: tuple[int, float], popen: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._live[key] = popen

    def is_own(self, key: tuple[int, float]) -> bool:
        with self._lock:
            return key in self._live or key in self._codes

    def has_pid(self, pid: int) -> bool:
        """Whether a Popen handle of ours waits for `pid`."""
        with self._lock:
            return any(key[0] == pid for key in self._live)

    def is_unreaped(self, key: tuple[int, float]) -> bool:
        with self._lock:
            return key in self._live

    def poll(self, key: tuple[int, float]) -> int | None:
        """Reap the child if it has exited; its exit code, or None if running or not ours."""
        with self._lock:
            if key in self._codes:
                return self._codes[key]
            popen = self._live.get(key)
            if popen is None:
                return None
            code = popen.poll()
            if code is not None:
                del self._live[key]
                self._remember(key, code)
            return code

    def reap_inherited(self, key: tuple[int, float]) -> int | None:
        """Reap an engine we did not spawn but inherited as a child subreaper, if exited.

        Only a zombie with this exact identity whose parent is us is reaped, so no Popen
        handle elsewhere in this process loses its child.
        """
        pid, create_time = key
        with self._lock:
            if key in self._codes or key in self._live:
                return self._codes.get(key)
            try:
                process = psutil.Process(pid)
                if (
                    process.ppid() != os.getpid()
                    or process.status() != psutil.STATUS_ZOMBIE
                    or abs(process.create_time() - create_time) > CREATE_TIME_TOLERANCE
                ):
                    return None
                reaped, status = os.waitpid(pid, os.WNOHANG)
            except (*UNREADABLE, ChildProcessError):
                return None
            if reaped != pid:
                return None
            code = os.waitstatus_to_exitcode(status)
            self._remember(key, code)
            return code

    def _remember(self, key: tuple[int, float], code: int) -> None:
        self._codes[key] = code
        while len(self._codes) > self._MAX_REMEMBERED:
            self._codes.popitem(last=False)


_children = _Children()


class EngineParent(Protocol):
    """Another process that parents the engines this one starts (engine_owner)."""

    def spawn(self, spec: ProcessSpec) -> EngineProcess | None:
        """The engine, started under the other parent; None to start it here."""

    def exit_code(self, proc: EngineProcess) -> int | None:
        """The exit code the other parent reaped for `proc`, if any."""


_parent: EngineParent | None = None


def hand_engines_to(parent: EngineParent | None) -> None:
    """Start engines under `parent` from now on (None: as this process's children)."""
    global _parent
    _parent = parent


def _open_log(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_APPEND is not optional: CRIU restores a regular file at the offset it was dumped
    # at and refuses ("File has bad size") when the file has since grown; in append mode
    # the offset does not matter.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _LOG_MODE)
    # The log is appended to across starts: the marker tells where this run begins, so a
    # failure's cause is looked for in this run only (engine_log.read_failure_cause).
    when = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        os.write(fd, run_marker_line(when).encode())
    except OSError:
        os.close(fd)
        raise
    return fd


def _validated_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, str | bytes):
        raise SpawnError("argv must be a list of strings, not a single string")
    items = list(argv)
    if not items:
        raise SpawnError("argv is empty")
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise SpawnError(f"argv[{index}] is {type(item).__name__}, expected a string")
        if "\0" in item:
            raise SpawnError(f"argv[{index}] contains a NUL byte")
    return items


def _environment(spec: ProcessSpec) -> dict[str, str]:
    env = dict(os.environ if spec.base_env is None else spec.base_env)
    if spec.tmp_dir is not None:
        env["TMPDIR"] = spec.tmp_dir
    env.update(spec.env)
    for name, value in env.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise SpawnError(f"environment variable {name!r} must map a string to a string")
    return env


def _prepare_files(spec: ProcessSpec) -> None:
    """What the engine finds at start: no stale socket, an empty private TMPDIR."""
    try:
        if spec.uds is not None:
            remove_stale_socket(spec.uds)
        if spec.tmp_dir is not None:
            prepare_private_tmp(spec.tmp_dir)
    except OSError as exc:
        raise SpawnError(f"cannot prepare the engine's files: {exc}") from exc


def spawn(spec: ProcessSpec) -> EngineProcess:
    """Start ``spec.argv`` in a session and process group of its own; return its record."""
    argv = _validated_argv(spec.argv)
    handed = _parent.spawn(spec) if _parent is not None else None
    if handed is not None:
        return handed
    env = _environment(spec)
    log_path = Path(spec.log_path)
    _prepare_files(spec)
    try:
        log_fd = _open_log(log_path)
    except OSError as exc:
        raise SpawnError(f"cannot open engine log {log_path}: {exc}") from exc
    try:
        # CRIU needs stdin to be a /dev/null the engine's mount namespace sees, so it is
        # opened here rather than inherited.
        stdin_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            popen = subprocess.Popen(
                argv,
                stdin=stdin_fd,
                stdout=log_fd,
                stderr=log_fd,
                env=env,
                cwd=spec.cwd,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(stdin_fd)
    except OSError as exc:
        raise SpawnError(f"cannot start {argv[0]!r}: {exc}") from exc
    finally:
        os.close(log_fd)
    # Until we reap it the child's pid cannot be reused, so reading its create time
    # here is race-free even if it has already exited.
    create_time = psutil.Process(popen.pid).create_time()
    record = EngineProcess(
        pid=popen.pid,
        create_time=create_time,
        pgid=popen.pid,  # start_new_session: setsid() ran before exec, so pgid == pid
        argv=tuple(argv),
        log_path=str(log_path),
    )
    _children.add(record.identity, popen)
    return record


def spawned_here(proc: EngineProcess) -> bool:
    """True for engines this process spawned (reaped or not)."""
    return _children.is_own(proc.identity)


def unreaped_child(proc: EngineProcess) -> bool:
    """True while ``proc`` is our child and not yet reaped: its pid cannot be reused."""
    return _children.is_unreaped(proc.identity)


def live_process(pid: int, create_time: float) -> psutil.Process | None:
    """The non-zombie process with this identity, or None."""
    if pid <= 0:
        return None
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - create_time) > CREATE_TIME_TOLERANCE:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except UNREADABLE:
        return None
    return process


def adopt(
    pid: int, create_time: float, pgid: int, *, log_path: str | None = None
) -> EngineProcess | None:
    """A record for an engine we did not start, or None when that exact process is gone.

    A different process that now carries the same pid number is refused: it has another
    create time. The record carries the process's live group; the recorded ``pgid`` only
    documents what the caller expected (the two agree unless the engine left its group).
    """
    process = live_process(pid, create_time)
    if process is None:
        return None
    try:
        argv = tuple(process.cmdline())
        actual_pgid = os.getpgid(pid)
    except (*UNREADABLE, ProcessLookupError):
        return None
    # The live group is the truth: signalling a stale recorded pgid could hit a stranger.
    del pgid
    return EngineProcess(
        pid=pid, create_time=create_time, pgid=actual_pgid, argv=argv, log_path=log_path
    )


def attach(pid: int, *, log_path: str | None = None) -> EngineProcess | None:
    """A record for a live process known to be an engine by other means, or None if gone.

    For CRIU's ``--restore-detached``: the restored tree is a new kernel task with the old
    pid, so it has a new create time that must be recorded as its identity from now on.
    """
    try:
        create_time = psutil.Process(pid).create_time()
    except UNREADABLE:
        return None
    return adopt(pid, create_time, pid, log_path=log_path)


def exit_code(proc: EngineProcess) -> int | None:
    """The exit code of an exited engine when we reaped it; None when running or unknown.

    Known for engines this process spawned, and for adopted ones it inherited as a child
    subreaper; the exit status of any other process goes to its own parent.
    """
    if _children.is_unreaped(proc.identity):
        return _children.poll(proc.identity)
    code = _children.reap_inherited(proc.identity)
    if code is None and _parent is not None:
        code = _parent.exit_code(proc)
    return code


def is_alive(proc: EngineProcess) -> bool:
    """True while the very process recorded in ``proc`` runs (zombies count as dead)."""
    if exit_code(proc) is not None:
        return False
    return live_process(proc.pid, proc.create_time) is not None


def _proc_table() -> list[tuple[int, bytes, int, int]]:
    """(pid, state, ppid, pgrp) of every process, from one pass over /proc."""
    found: list[tuple[int, bytes, int, int]] = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                    stat = stat_file.read()
            except OSError:
                continue
            # Fields after the command name (which may contain spaces and parentheses):
            # state ppid pgrp ...
            fields = stat[stat.rfind(b")") + 2 :].split(b" ", 3)
            if len(fields) >= 3:
                found.append((int(entry.name), fields[0], int(fields[1]), int(fields[2])))
    return found


def group_processes(pgid: int) -> list[tuple[int, bytes, int]]:
    """(pid, state, ppid) of every process whose process group is ``pgid``, from /proc."""
    return [(pid, state, ppid) for pid, state, ppid, pgrp in _proc_table() if pgrp == pgid]


def process_tree(pid: int, pgid: int) -> list[int]:
    """Live (non-zombie) pids of ``pid``, its descendants and group ``pgid``: one scan.

    ``pgid`` 0 (or 1) leaves the group out. The caller checks first that ``pid`` is the
    process it means (its create time); this only walks the table.
    """
    return process_trees([(pid, pgid)])[pid]


def process_trees(roots: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    """`process_tree` of several (pid, pgid) roots from one scan of /proc."""
    table = [(p, ppid, pgrp) for p, state, ppid, pgrp in _proc_table() if state not in (b"Z", b"X")]
    children: dict[int, list[int]] = {}
    groups: dict[int, set[int]] = {}
    for p, ppid, pgrp in table:
        children.setdefault(ppid, []).append(p)
        groups.setdefault(pgrp, set()).add(p)
    alive = {p for p, _, _ in table}
    trees: dict[int, list[int]] = {}
    for pid, pgid in roots:
        found = set(groups.get(pgid, ())) if pgid > 1 else set()
        stack = [pid] if pid in alive else []
        while stack:
            current = stack.pop()
            found.add(current)
            stack.extend(c for c in children.get(current, ()) if c not in found)
        trees[pid] = sorted(found)
    return trees


def group_members(pgid: int) -> list[int]:
    """Pids of the non-zombie processes whose process group is ``pgid``."""
    return [pid for pid, state, _ in group_processes(pgid) if state not in (b"Z", b"X")]


def reap_orphans(pgid: int, *, leader: int) -> list[int]:
    """Reap zombies of group ``pgid`` that were reparented to us; the pids reaped.

    Only a child subreaper (see :func:`set_child_subreaper`) inherits an engine's orphaned
    workers. The leader is skipped: it is reaped through its Popen handle.
    """
    me = os.getpid()
    reaped = []
    for pid, state, ppid in group_processes(pgid):
        if state == b"Z" and ppid == me and pid != leader:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped.append(pid)
    return reaped


def inherit_group(pgid: int) -> None:
    """Mark process group `pgid` as an engine this process inherits rather than spawned
    (criu restores a tree detached from itself; as a subreaper we become its parent), so
    `reap_stray_children` may reap its members once they exit."""
    with _inherited_lock:
        _inherited.add(pgid)


def reap_stray_children() -> list[int]:
    """Reap exited members of the engines we inherited (see `inherit_group`): no Popen handle of
    ours waits for them, so without this they would stay zombies holding their pids.

    Only inherited groups: any other child (a helper run with `subprocess`, or a process a
    library in this process started in a session of its own) is reaped by its own handle,
    which would otherwise see ECHILD and report exit status 0 whatever the child returned.
    """
    me = os.getpid()
    with _inherited_lock:
        groups = set(_inherited)
    if not groups:
        return []
    reaped = []
    present: set[int] = set()
    for pid, state, ppid, pgrp in _proc_table():
        if pgrp not in groups:
            continue
        present.add(pgrp)
        if state != b"Z" or ppid != me or _children.has_pid(pid):
            continue
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped.append(pid)
    with _inherited_lock:
        # A group with no process left is done; a later restore of its image inherits anew.
        _inherited.difference_update(groups - present)
    return reaped


_inherited: set[int] = set()
_inherited_lock = threading.Lock()


def start_reaper(interval: float = 1.0) -> None:
    """Reap stray children (see `reap_stray_children`) every `interval` in a daemon thread;
    once per process. Without it a dead restored engine would keep its pid as a zombie,
    and the next restore of its image, which needs exactly that pid, would fail."""
    global _reaper
    with _reaper_lock:
        if _reaper is not None and _reaper.is_alive():
            return

        def loop() -> None:
            while True:
                time.sleep(interval)
                try:
                    reap_stray_children()
                except OSError:
                    continue

        _reaper = threading.Thread(target=loop, name="llmux-reaper", daemon=True)
        _reaper.start()


_reaper: threading.Thread | None = None
_reaper_lock = threading.Lock()


def set_child_subreaper(enabled: bool = True) -> None:
    """Make this process inherit (and so be able to reap) its orphaned descendants.

    Without it an engine's worker processes killed with their group are reparented to
    pid 1, which in a container without a real init never reaps them.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, int(enabled), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise SupervisorError(f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(errno)}")


def read_log_tail(log_path: str | os.PathLike[str] | None, *, lines: int = 40) -> str:
    """The last ``lines`` lines of an engine log, decoded leniently; '' when unreadable."""
    if log_path is None:
        return ""
    max_bytes = 64 * 1024
    try:
        with open(log_path, "rb") as log_file:
            size = log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, size - max_bytes))
            data = log_file.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
