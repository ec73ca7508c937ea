"""No test may leave a process behind.

At configure time the run puts a unique marker into ``os.environ`` (``LLMUX_TEST_RUN``), so
every process started during the run inherits it, including engines in sessions of their
own that are no longer our descendants. After each test's teardown (function fixtures
done) the guard scans /proc for live processes carrying the marker, or descending from
this pytest process, that were not there before the test; it kills their process groups
and fails the test, naming each pid and command line. At the end of the session every
marked survivor is killed and the session fails.

Processes owned by a module- or session-scoped fixture must be registered with
``allow_process(pid)`` (or the ``process_guard`` fixture's ``allow``); they are exempt from
the per-test check but not from the end-of-session one.

Nested runs (pytester in-process) append their own marker to the variable, so both the
inner and the outer guard see processes the inner run starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Generator, Iterable
from dataclasses import dataclass

import pytest

MARKER_VARIABLE = "LLMUX_TEST_RUN"


@dataclass(frozen=True)
class Survivor:
    pid: int
    starttime: int  # clock ticks since boot: with the pid, the process's identity
    pgid: int
    cmdline: str

    def describe(self) -> str:
        return f"pid {self.pid} (pgid {self.pgid}): {self.cmdline or '?'}"


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _parse_stat(raw: bytes) -> tuple[str, int, int, int]:
    """(state, ppid, pgrp, starttime) from /proc/PID/stat."""
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[19])


def _ancestors(pid: int) -> set[int]:
    chain = {pid}
    while pid > 1:
        raw = _read(f"/proc/{pid}/stat")
        if raw is None:
            break
        pid = _parse_stat(raw)[1]
        chain.add(pid)
    return chain


class ProcessGuard:
    """Finds, reports and kills processes that a test run left behind."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.me = os.getpid()
        self.exempt = _ancestors(self.me)
        self.allowed: set[int] = set()
        self.baseline: set[tuple[int, int]] | None = None
        # Most processes on the box are not ours and their environment does not change:
        # remember (pid, starttime) of unmarked ones so each scan reads only stat files.
        self._unmarked: set[tuple[int, int]] = set()

    def _marked(self, pid: int, starttime: int) -> bool:
        key = (pid, starttime)
        if key in self._unmarked:
            return False
        environ = _read(f"/proc/{pid}/environ")
        if environ is None:
            return False
        for entry in environ.split(b"\0"):
            if entry.startswith(MARKER_VARIABLE.encode() + b"="):
                value = entry.split(b"=", 1)[1].decode(errors="replace")
                if self.marker in value.split(","):
                    return True
        self._unmarked.add(key)
        return False

    def scan(self) -> dict[tuple[int, int], Survivor]:
        """Live (non-zombie) processes of this run, other than pytest and its ancestors."""
        stats: dict[int, tuple[str, int, int, int]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                raw = _read(f"/proc/{name}/stat")
                if raw is not None:
                    stats[int(name)] = _parse_stat(raw)
        found: dict[tuple[int, int], Survivor] = {}
        for pid, (state, _ppid, pgrp, starttime) in stats.items():
            if pid in self.exempt or state in ("Z", "X"):
                continue
            if self._marked(pid, starttime) or self._descends_from_me(pid, stats):
                cmdline = (_read(f"/proc/{pid}/cmdline") or b"").replace(b"\0", b" ")
                found[(pid, starttime)] = Survivor(
                    pid, starttime, pgrp, cmdline.decode(errors="replace").strip()
                )
        return found

    def _descends_from_me(self, pid: int, stats: dict[int, tuple[str, int, int, int]]) -> bool:
        # Catches children started with a scrubbed environment (no marker).
        seen = 0
        while pid in stats and seen < 64:
            pid = stats[pid][1]
            if pid == self.me:
                return True
            seen += 1
        return False

    def new_survivors(self) -> list[Survivor]:
        current = self.scan()
        baseline = self.baseline or set()
        leaked = [
            survivor
            for key, survivor in current.items()
            if key not in baseline and survivor.pid not in self.allowed
        ]
        self.baseline = set(current) - {(s.pid, s.starttime) for s in leaked}
        return leaked

    def kill(self, survivors: Iterable[Survivor]) -> None:
        survivors = list(survivors)
        own_group = os.getpgrp()
        for survivor in survivors:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if survivor.pgid > 1 and survivor.pgid != own_group:
                    os.killpg(survivor.pgid, signal.SIGKILL)
                else:
                    os.kill(survivor.pid, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        pending = {s.pid for s in survivors}
        while pending and time.monotonic() < deadline:
            for pid in list(pending):
                # Reap our own children so they do not linger as zombies.
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                raw = _read(f"/proc/{pid}/stat")
                if raw is None or _parse_stat(raw)[0] in ("Z", "X"):
                    pending.discard(pid)
            if pending:
                time.sleep(0.01)


_guard_key = pytest.StashKey[ProcessGuard]()
_previous_key = pytest.StashKey[str | None]()


def allow_process(config: pytest.Config, pid: int) -> None:
    """Exempt ``pid`` (owned by a wider-scoped fixture) from the per-test leak check."""
    config.stash[_guard_key].allowed.add(pid)


@pytest.fixture(scope="session")
def process_guard(pytestconfig: pytest.Config) -> ProcessGuard:
    """The run's guard; call ``process_guard.allowed.add(pid)`` for session-long processes."""
    return pytestconfig.stash[_guard_key]


def pytest_configure(config: pytest.Config) -> None:
    marker = uuid.uuid4().hex
    previous = os.environ.get(MARKER_VARIABLE)
    config.stash[_previous_key] = previous
    os.environ[MARKER_VARIABLE] = f"{previous},{marker}" if previous else marker
    config.stash[_guard_key] = ProcessGuard(marker)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _previous_key not in config.stash:
        return
    previous = config.stash[_previous_key]
    if previous is None:
        os.environ.pop(MARKER_VARIABLE, None)
    else:
        os.environ[MARKER_VARIABLE] = previous


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    guard = item.config.stash[_guard_key]
    if guard.baseline is None:
        guard.baseline = set(guard.scan())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    guard = item.config.stash[_guard_key]
    try:
        result = yield
    except BaseException:
        leaked = guard.new_survivors()
        if leaked:
            guard.kill(leaked)
            listing = "\n".join(survivor.describe() for survivor in leaked)
            item.add_report_section("teardown", "leaked processes (killed)", listing)
        raise
    leaked = guard.new_survivors()
    if leaked:
        guard.kill(leaked)
        listing = "\n".join(f"  {survivor.describe()}" for survivor in leaked)
        pytest.fail(f"test left {len(leaked)} process(es) running (killed):\n{listing}", False)
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    guard = session.config.stash.get(_guard_key, None)
    if guard is None:
        return
    survivors = list(guard.scan().values())
    if not survivors:
        return
    guard.kill(survivors)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"process guard: {len(survivors)} process(es) survived the session (killed):"]
    lines += [f"  {survivor.describe()}" for survivor in survivors]
    if reporter is not None:
        for line in lines:
            reporter.write_line(line, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
