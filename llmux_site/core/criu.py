"""CRIU dump and restore of a whole engine tree, with the flags of ENGINE_CONTRACT §4.

Pure core: runs the `criu` binary (4.x; on Debian 12 hosts the private one that
scripts/install-criu.sh unpacks). A dump stops the tree and writes it to an image
directory; a restore brings it back detached (no longer our child), with the pids it had,
so it is then known by its recorded identity and process group. Each step writes its
CRIU log (`-v4`) into the image directory, where it stays with the image.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import psutil

from llmux_site.core.criu_shm import (
    clean_link_remaps,
    put_back,
    save_after_dump,
    shm_files_of,
    shm_lock,
)
from llmux_site.core.processes import (
    UNREADABLE,
    EngineProcess,
    exit_code,
    group_processes,
    inherit_group,
    process_tree,
    read_log_tail,
    reap_orphans,
)

__all__ = ["Criu", "CriuError", "DumpResult", "Progress", "RestoreResult", "bytes_of"]

# --tree: the whole engine tree. --link-remap and --ghost-limit: files deleted but still
# open (multiprocessing's sem.mp-* in /dev/shm) go into the image, which stays
# self-contained. --enable-external-masters: NVIDIA's /proc mounts. --tcp-established:
# torch.distributed's store connections (tensor parallel > 1). --shell-job: the engine
# runs in a session of its own, not as a daemon CRIU would have made.
COMMON = ["--shell-job", "--ext-unix-sk", "--tcp-established", "--enable-external-masters"]
DUMP = [*COMMON, "--link-remap", "--ghost-limit", "1048576"]
RESTORE = [*COMMON, "--restore-detached"]
DUMP_LOG = "dump.log"
RESTORE_LOG = "restore.log"
PROGRESS_INTERVAL = 0.5
LOG_TAIL_LINES = 20  # of CRIU's log, in an error
REAP_TIMEOUT = 10.0  # seconds a dumped tree's parent has to reap it

# Bytes done so far of a dump (written) or restore (read).
Progress = Callable[[int], None]


class CriuError(Exception):
    """criu failed; `log_tail` holds the end of its log."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(f"{message}\n{log_tail}" if log_tail else message)
        self.log_tail = log_tail


@dataclass(frozen=True, slots=True)
class DumpResult:
    images_dir: Path
    bytes: int
    seconds: float


@dataclass(frozen=True, slots=True)
class RestoreResult:
    process: EngineProcess
    seconds: float


def _log_tail(log: Path) -> str:
    return read_log_tail(log, lines=LOG_TAIL_LINES)


def bytes_of(directory: Path) -> int:
    """The bytes of the files in an image directory (0 when it is not there)."""
    total = 0
    try:
        entries = list(directory.iterdir())
    except OSError:
        return 0
    for entry in entries:
        try:
            total += entry.stat().st_size if entry.is_file() else 0
        except OSError:  # removed while we looked
            continue
    return total


def _bytes_read(pid: int) -> int:
    """What criu and the tasks it forked have read so far (a restore reads the pages)."""
    total = 0
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except UNREADABLE:
        return 0
    for process in tree:
        try:
            total += process.io_counters().read_chars
        except (*UNREADABLE, AttributeError):
            continue
    return total


class Criu:
    """One criu binary; `dump` and `restore` block (call them from a thread)."""

    def __init__(
        self,
        binary: str,
        *,
        plugin_dir: str | None = None,
        timeout: float = 1800.0,
        progress_interval: float = PROGRESS_INTERVAL,
        shm_lock_file: Path | None = None,
    ) -> None:
        self.binary = binary
        self.plugin_dir = plugin_dir or None
        self.timeout = timeout
        self.progress_interval = progress_interval
        # One lock for every process of the host that dumps or restores (criu_shm).
        self.shm_lock_file = shm_lock_file or Path(tempfile.gettempdir()) / "llmux-criu.lock"

    @cached_property
    def version(self) -> str:
        """`criu --version`'s version ("4.1.1"); empty when it does not answer."""
        try:
            out = subprocess.run(
                [self.binary, "--version"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""
        for line in out.splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
        return out.strip().splitlines()[0] if out.strip() else ""

    def _plugin_args(self, cuda_plugin: bool) -> list[str]:
        if not cuda_plugin:
            return []
        if self.plugin_dir is None:
            raise CriuError("the CUDA plugin is needed but checkpoint.cuda_plugin_dir is not set")
        return ["-L", self.plugin_dir]

    def _run(
        self,
        args: list[str],
        log: Path,
        what: str,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        command = [self.binary, *args, "-o", str(log), "-v4"]
        try:
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as exc:
            raise CriuError(f"criu {what} failed: {exc}", log_tail=_log_tail(log)) from exc
        deadline = time.monotonic() + self.timeout
        with child:
            while True:
                try:
                    _, stderr = child.communicate(timeout=self.progress_interval)
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() > deadline:
                        child.kill()
                        child.communicate()
                        raise CriuError(
                            f"criu {what} took longer than {self.timeout:.0f} s and was killed",
                            log_tail=_log_tail(log),
                        ) from None
                    if progress is not None:
                        progress(child.pid)
        if child.returncode != 0:
            raise CriuError(
                f"criu {what} exited with status {child.returncode}: {stderr.strip()}",
                log_tail=_log_tail(log),
            )

    def dump(
        self,
        process: EngineProcess,
        images_dir: Path,
        *,
        cuda_plugin: bool = False,
        progress: Progress | None = None,
    ) -> DumpResult:
        """Dump the engine tree into `images_dir` (created, must be empty); the tree ends.

        `progress` hears the bytes written so far, about twice a second.
        """
        images_dir.mkdir(parents=True, exist_ok=False)
        started = time.monotonic()
        args = ["dump", "--tree", str(process.pid), "--images-dir", str(images_dir), *DUMP]
        args += self._plugin_args(cuda_plugin)
        written = (lambda _pid: progress(bytes_of(images_dir))) if progress else None
        with shm_lock(self.shm_lock_file):
            clean_link_remaps()  # every image keeps its own: stale ones only collide
            mapped = shm_files_of(process_tree(process.pid, process.pgid))
            self._run(args, images_dir / DUMP_LOG, "dump", written)
            save_after_dump(images_dir, mapped)
        size = bytes_of(images_dir)
        if progress is not None:
            progress(size)
        # The dumped tree has exited: reap what is ours now. A zombie keeps its pid, and the
        # restore needs exactly those pids back ("Can't fork for <pid>: File exists").
        _wait_reaped(process)
        return DumpResult(images_dir, size, time.monotonic() - started)

    def end_kept(self, process: EngineProcess) -> None:
        """End an engine whose image is kept as its checkpoint, as a dump would end it (at
        once: it is drained), with its /dev/shm files: the image has its own copies, put
        back at each restore."""
        with shm_lock(self.shm_lock_file):
            shared = shm_files_of(process_tree(process.pid, process.pgid))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pgid, signal.SIGKILL)
            _wait_reaped(process)
            for path in shared:
                path.unlink(missing_ok=True)

    def restore(
        self,
        images_dir: Path,
        *,
        cuda_plugin: bool = False,
        progress: Progress | None = None,
    ) -> RestoreResult:
        """Restore the tree of `images_dir`, detached; its root process (pid as dumped).

        `progress` hears the bytes read so far (by criu and the tasks it forks).
        """
        pidfile = images_dir / "restored.pid"
        pidfile.unlink(missing_ok=True)
        size = bytes_of(images_dir)
        started = time.monotonic()
        args = ["restore", "--images-dir", str(images_dir), *RESTORE, "--pidfile", str(pidfile)]
        args += self._plugin_args(cuda_plugin)
        read = (lambda pid: progress(_bytes_read(pid))) if progress else None
        with shm_lock(self.shm_lock_file):
            clean_link_remaps()
            put_back(images_dir)  # so that this image can be restored again, any time
            self._run(args, images_dir / RESTORE_LOG, "restore", read)
        if progress is not None:
            progress(size)  # all of it has been read
        pid = int(pidfile.read_text().split()[0])
        live = _running(pid)
        if live is None:
            raise CriuError(f"criu restore said it restored pid {pid}, which is not running")
        process = EngineProcess(pid=pid, create_time=live.create_time(), pgid=os.getpgid(pid))
        inherit_group(process.pgid)  # detached from criu, it is our child now: reap it when it ends
        return RestoreResult(process, time.monotonic() - started)


def _wait_reaped(process: EngineProcess, timeout: float = REAP_TIMEOUT) -> None:
    """Wait until no process of the ended tree is left, zombies included, reaping what is
    ours: a zombie keeps its pid, and a restore needs exactly those pids back ("Can't fork
    for <pid>: File exists").

    Under `llmux worker` the engines' parent is the host's engine owner (engine_owner),
    which reaps them within a fraction of a second. A parent that never reaps is not waited
    for past `timeout`: the restore then fails, saying which pid it could not get back.
    """
    deadline = time.monotonic() + timeout
    while True:
        exit_code(process)  # reaps the leader if it is our child (or inherited)
        reap_orphans(process.pgid, leader=process.pid)
        if not group_processes(process.pgid) or time.monotonic() >= deadline:
            return
        time.sleep(0.02)


def _running(pid: int) -> psutil.Process | None:
    """The running process `pid`, whatever its create time (a restore gives it a new one)."""
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process
    except UNREADABLE:
        return None
