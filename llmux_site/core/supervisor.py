"""The engine process supervisor: spawn, adopt, watch, health-wait and stop engines.

Pure core: no Django. Collaborators (the clock, the health check) are arguments and the
results are plain data, so the worker's services decide what to record and publish.

Engines may not be our children (adopted after a worker restart, restored by CRIU with
``--restore-detached``), so exit watching uses a pidfd (instant, works for any process)
and stopping works on the process group, guarded by the leader's ``(pid, create_time)``
identity so a reused pid is never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass

import psutil

from llmux_site.core.engine_log import read_failure_cause
from llmux_site.core.processes import (
    UNREADABLE,
    EngineExitedError,
    EngineProcess,
    StartupTimeoutError,
    StopFailedError,
    SupervisorError,
    exit_code,
    group_members,
    is_alive,
    live_process,
    reap_orphans,
    spawned_here,
    unreaped_child,
)

Clock = Callable[[], float]
HealthCheck = Callable[[], Awaitable[bool]]

DEFAULT_POLL_INTERVAL = 0.1
DEFAULT_KILL_TIMEOUT = 5.0


class StopOutcome(enum.StrEnum):
    """How a stop ended."""

    ALREADY_GONE = "already_gone"
    TERMINATED = "terminated"
    KILLED = "killed"


@dataclass(frozen=True, slots=True)
class StopResult:
    """The outcome of a stop, how long it took and, when known, the leader's exit code.

    ``stray_pids`` lists processes still in the engine's old process group that were left
    alone because the group's leader was gone and the group was not provably ours.
    """

    outcome: StopOutcome
    duration: float
    exit_code: int | None = None
    stray_pids: tuple[int, ...] = ()


# --- exit watching -------------------------------------------------------------------


class _PidfdUnavailable(Exception):
    pass


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``; None if no such process; _PidfdUnavailable if unsupported."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    except (AttributeError, OSError) as exc:
        raise _PidfdUnavailable from exc


async def _wait_readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await readable
    finally:
        loop.remove_reader(fd)


async def _poll_until_dead(proc: EngineProcess, interval: float) -> None:
    # Polling is the fallback where pidfds are unavailable; there is no event to wait on.
    while is_alive(proc):
        await asyncio.sleep(interval)


async def wait_exit(
    proc: EngineProcess, *, poll_interval: float = DEFAULT_POLL_INTERVAL
) -> int | None:
    """Return when the engine's leader process has exited; its exit code when known.

    The exit code is known only for engines this process spawned (we reap those). Cancel
    the awaiting task to stop watching.
    """
    if not is_alive(proc):
        return exit_code(proc)
    try:
        pidfd = _open_pidfd(proc.pid)
    except _PidfdUnavailable:
        await _poll_until_dead(proc, poll_interval)
        return exit_code(proc)
    if pidfd is None:
        return exit_code(proc)
    try:
        # The pidfd pins whatever process had the pid when it was opened; the identity was
        # good before and is good now, so it is our engine and not a pid-reuse stranger.
        if is_alive(proc):
            try:
                await _wait_readable(pidfd)
            except NotImplementedError:  # an event loop without add_reader
                await _poll_until_dead(proc, poll_interval)
    finally:
        os.close(pidfd)
    return exit_code(proc)


# --- health waiting ------------------------------------------------------------------


async def _check_once(health: HealthCheck) -> tuple[bool, str | None]:
    try:
        return bool(await health()), None
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a health check that raises means "not healthy yet"
        return False, f"{type(exc).__name__}: {exc}"


async def wait_healthy(
    proc: EngineProcess,
    health: HealthCheck,
    *,
    # Not asyncio.timeout(): the engine's death must end the wait too, and the timeout is
    # the model's startup timeout that goes into the error.
    timeout: float,
    interval: float = 0.2,
    clock: Clock = time.monotonic,
) -> float:
    """Poll ``health`` until it returns True; the seconds that took.

    Raises EngineExitedError (exit code and the cause its log gives) when it dies first and
    StartupTimeoutError when ``timeout`` runs out. A health check that raises counts as
    "not yet healthy"; its last error is kept for the timeout message.
    """
    started = clock()
    deadline = started + timeout
    exited = asyncio.ensure_future(wait_exit(proc))
    last_error: str | None = None
    try:
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                raise StartupTimeoutError(proc.pid, timeout, last_error)
            check = asyncio.ensure_future(_check_once(health))
            done, _ = await asyncio.wait(
                {check, exited}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if exited in done:
                check.cancel()
                cause = read_failure_cause(proc.log_path)
                raise EngineExitedError(proc.pid, exited.result(), cause)
            if check not in done:
                check.cancel()
                raise StartupTimeoutError(proc.pid, timeout, last_error)
            healthy, last_error = check.result()
            if healthy:
                return clock() - started
            pause = min(interval, max(0.0, deadline - clock()))
            await asyncio.wait({exited}, timeout=pause)
    finally:
        exited.cancel()


# --- stopping ------------------------------------------------------------------------


def _group_is_shared(pgid: int) -> bool:
    # Never signal our own group (or init's): an engine record pointing there is wrong,
    # and killpg would take the worker down with it.
    return pgid <= 1 or pgid == os.getpgrp()


def _may_signal_group(proc: EngineProcess) -> bool:
    """Whether ``proc.pgid`` is still provably the engine's group."""
    if unreaped_child(proc):
        return True  # our unreaped child pins its pid, and with it the pgid number
    if live_process(proc.pid, proc.create_time) is not None:
        return True
    # A group we created whose leader we reaped: while any member lives the kernel keeps
    # the pgid number from being reused, and nobody but a process with pid == pgid could
    # have created a new group with it.
    return spawned_here(proc) and not psutil.pid_exists(proc.pgid)


def _members(proc: EngineProcess) -> list[int]:
    if _group_is_shared(proc.pgid):
        return [proc.pid] if live_process(proc.pid, proc.create_time) else []
    return group_members(proc.pgid)


def _signal(proc: EngineProcess, sig: signal.Signals, snapshot: list[psutil.Process]) -> None:
    if not _may_signal_group(proc):
        # The leader is gone and its pgid is no longer provably ours: signal only the
        # members seen while it was; psutil refuses a pid whose create time changed.
        for member in snapshot:
            with contextlib.suppress(*UNREADABLE):
                member.send_signal(sig)
        return
    try:
        if _group_is_shared(proc.pgid):
            os.kill(proc.pid, sig)
        else:
            os.killpg(proc.pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise SupervisorError(f"not allowed to signal engine group {proc.pgid}: {exc}") from exc


def _snapshot(pids: list[int]) -> list[psutil.Process]:
    processes = []
    for pid in pids:
        with contextlib.suppress(*UNREADABLE):
            processes.append(psutil.Process(pid))
    return processes


def _wait_group_gone(
    proc: EngineProcess, deadline: float, clock: Clock
) -> Generator[float, None, bool]:
    pause = 0.005
    while True:
        if not _members(proc):
            # Once every member is a zombie each has handed its children to its reaper,
            # so one pass collects all orphans that came to us (when we are a subreaper).
            if not _group_is_shared(proc.pgid):
                reap_orphans(proc.pgid, leader=proc.pid)
            return True
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        yield min(pause, remaining)
        pause = min(pause * 2, 0.05)


def _stop_steps(
    proc: EngineProcess, grace: float, kill_timeout: float, clock: Clock
) -> Generator[float, None, StopResult]:
    """The stop algorithm as a generator of pauses, shared by the sync and async drivers."""
    started = clock()

    def result(outcome: StopOutcome, strays: tuple[int, ...] = ()) -> StopResult:
        return StopResult(outcome, clock() - started, exit_code(proc), strays)

    if not _may_signal_group(proc):
        foreign = _group_is_shared(proc.pgid) or psutil.pid_exists(proc.pgid)
        return result(StopOutcome.ALREADY_GONE, () if foreign else tuple(_members(proc)))
    members = _members(proc)
    if not members:
        return result(StopOutcome.ALREADY_GONE)
    snapshot = _snapshot(members)
    _signal(proc, signal.SIGTERM, snapshot)
    if (yield from _wait_group_gone(proc, started + grace, clock)):
        return result(StopOutcome.TERMINATED)
    _signal(proc, signal.SIGKILL, snapshot)
    if (yield from _wait_group_gone(proc, clock() + kill_timeout, clock)):
        return result(StopOutcome.KILLED)
    raise StopFailedError(proc.pgid, _members(proc))


def stop(
    proc: EngineProcess,
    *,
    grace: float,
    kill_timeout: float = DEFAULT_KILL_TIMEOUT,
    clock: Clock = time.monotonic,
) -> StopResult:
    """SIGTERM the engine's process group, SIGKILL it after ``grace``; wait until it is gone.

    Idempotent: stopping an engine that is already gone returns ALREADY_GONE. Raises
    StopFailedError if members survive ``kill_timeout`` seconds after SIGKILL.
    """
    steps = _stop_steps(proc, grace, kill_timeout, clock)
    while True:
        try:
            pause = next(steps)
        except StopIteration as finished:
            stopped: StopResult = finished.value
            return stopped
        time.sleep(pause)


async def stop_async(
    proc: EngineProcess,
    *,
    grace: float,
    kill_timeout: float = DEFAULT_KILL_TIMEOUT,
    clock: Clock = time.monotonic,
) -> StopResult:
    """The same as :func:`stop`, sleeping on the event loop instead of blocking it."""
    steps = _stop_steps(proc, grace, kill_timeout, clock)
    while True:
        try:
            pause = next(steps)
        except StopIteration as finished:
            stopped: StopResult = finished.value
            return stopped
        await asyncio.sleep(pause)
