"""CUDA suspend: an engine tree's GPU state to host memory and back (pure core).

The CUDA driver's checkpoint API acts on another process by pid (ENGINE_CONTRACT §3):
lock (its CUDA calls block), checkpoint (device memory to host, every allocation and
context released: the GPU is free), restore, unlock. Every CUDA process of an engine
tree holds a context (vLLM's API server too), so all of them are suspended, or none.

`CheckpointDriver` is the one seam where the driver is called: `DriverApi` calls it
in-process through cuda-bindings (one `cuInit` for the life of the process, which is
why the worker keeps one helper process for it), `CheckpointBinary` runs NVIDIA's
`cuda-checkpoint` for each step (it pays CUDA's start-up every time).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = [
    "CheckpointBinary",
    "CheckpointDriver",
    "CudaSuspendError",
    "DriverApi",
    "resume_tree",
    "suspend_tree",
]

RUNNING = "running"
LOCKED = "locked"
CHECKPOINTED = "checkpointed"
FAILED = "failed"
# CUprocessState values (cuda.h): the names the driver's own tools print.
STATE_NAMES = {0: RUNNING, 1: LOCKED, 2: CHECKPOINTED, 3: FAILED}
DEFAULT_LOCK_TIMEOUT_MS = 10_000


class CudaSuspendError(Exception):
    """A suspend or resume step failed; what could be undone has been."""


class CheckpointDriver(Protocol):
    """The CUDA driver's process checkpoint calls, by pid."""

    def state(self, pid: int) -> str | None:
        """running, locked, checkpointed or failed; None when the process has no CUDA."""

    def lock(self, pid: int, timeout_ms: int) -> None: ...

    def checkpoint(self, pid: int) -> None: ...

    def restore(self, pid: int) -> None: ...

    def unlock(self, pid: int) -> None: ...


class DriverApi:
    """`CheckpointDriver` through `cuda.bindings.driver` (cuda-bindings, driver >= 570)."""

    def __init__(self) -> None:
        # GPU hosts only (the `cuda` extra): imported on use.
        from cuda.bindings import driver  # type: ignore[import-not-found, unused-ignore]

        self._driver: Any = driver
        self._check(driver.cuInit(0), "cuInit")

    def _check(self, result: Any, call: str) -> Any:
        error, *rest = result if isinstance(result, tuple) else (result,)
        if error != self._driver.CUresult.CUDA_SUCCESS:
            _, name = self._driver.cuGetErrorName(error)
            raise CudaSuspendError(f"{call} failed: {name.decode() if name else error}")
        return rest[0] if rest else None

    def state(self, pid: int) -> str | None:
        error, state = self._driver.cuCheckpointProcessGetState(pid)
        if error != self._driver.CUresult.CUDA_SUCCESS:
            return None  # no CUDA in that process (or gone): nothing to suspend there
        return STATE_NAMES.get(int(state), FAILED)

    def lock(self, pid: int, timeout_ms: int) -> None:
        args = self._driver.CUcheckpointLockArgs()
        args.timeoutMs = timeout_ms
        self._check(self._driver.cuCheckpointProcessLock(pid, args), f"lock of {pid}")

    def checkpoint(self, pid: int) -> None:
        self._check(self._driver.cuCheckpointProcessCheckpoint(pid, None), f"checkpoint of {pid}")

    def restore(self, pid: int) -> None:
        self._check(self._driver.cuCheckpointProcessRestore(pid, None), f"restore of {pid}")

    def unlock(self, pid: int) -> None:
        self._check(self._driver.cuCheckpointProcessUnlock(pid, None), f"unlock of {pid}")


class CheckpointBinary:
    """`CheckpointDriver` through NVIDIA's `cuda-checkpoint` (`--action`, driver >= 570)."""

    def __init__(self, path: str, *, timeout: float = 600.0) -> None:
        self.path = path
        self.timeout = timeout

    def _run(self, *args: str) -> str:
        try:
            done = subprocess.run(
                [self.path, *args],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CudaSuspendError(f"{self.path} {' '.join(args)}: {exc}") from exc
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()
            raise CudaSuspendError(f"{self.path} {' '.join(args)} failed: {detail}")
        return done.stdout.strip()

    def state(self, pid: int) -> str | None:
        try:
            state = self._run("--get-state", "--pid", str(pid))
        except CudaSuspendError:
            return None
        return state if state in (RUNNING, LOCKED, CHECKPOINTED, FAILED) else None

    def lock(self, pid: int, timeout_ms: int) -> None:
        self._run("--action", "lock", "--pid", str(pid), "--timeout", str(timeout_ms))

    def checkpoint(self, pid: int) -> None:
        self._run("--action", "checkpoint", "--pid", str(pid))

    def restore(self, pid: int) -> None:
        self._run("--action", "restore", "--pid", str(pid))

    def unlock(self, pid: int) -> None:
        self._run("--action", "unlock", "--pid", str(pid))


def suspend_tree(
    driver: CheckpointDriver,
    pids: Sequence[int],
    *,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
) -> list[int]:
    """Suspend every CUDA process among `pids`; the pids suspended.

    All are locked before any is checkpointed, so no process starts GPU work (a
    collective with a peer, say) while another has already lost its memory. On a
    failure everything done is undone, in reverse, and CudaSuspendError raised.
    """
    cuda = [pid for pid in pids if driver.state(pid) == RUNNING]
    locked: list[int] = []
    saved: list[int] = []
    try:
        for pid in cuda:
            driver.lock(pid, lock_timeout_ms)
            locked.append(pid)
        for pid in cuda:
            driver.checkpoint(pid)
            saved.append(pid)
    except Exception as exc:
        undo = _undo(driver, saved, locked)
        raise CudaSuspendError(f"CUDA suspend failed: {exc}{undo}") from exc
    return cuda


def _undo(driver: CheckpointDriver, saved: list[int], locked: list[int]) -> str:
    problems = []
    for pid in reversed(saved):
        try:
            driver.restore(pid)
        except Exception as exc:  # keep undoing the others
            problems.append(str(exc))
    for pid in reversed(locked):
        try:
            driver.unlock(pid)
        except Exception as exc:
            problems.append(str(exc))
    return f"; undoing it failed too: {'; '.join(problems)}" if problems else ""


def resume_tree(driver: CheckpointDriver, pids: Sequence[int]) -> list[int]:
    """Restore and unlock every process of `pids` left checkpointed or locked; those pids.

    Works from the driver's own state, so it also finishes a suspend that a crash cut
    short. Raises CudaSuspendError for a process the driver reports failed.
    """
    resumed = []
    for pid in reversed(pids):
        state = driver.state(pid)
        if state == FAILED:
            raise CudaSuspendError(f"process {pid} is in CUDA state failed: it cannot resume")
        if state == CHECKPOINTED:
            driver.restore(pid)
            state = LOCKED
        if state == LOCKED:
            driver.unlock(pid)
            resumed.append(pid)
    return resumed
