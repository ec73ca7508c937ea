"""CRIU dump and restore of a whole engine tree, with the flags of ENGINE_CONTRACT §4.

Pure core: runs the `criu` binary (4.x; on Debian 12 hosts the private one that
scripts/install-criu.sh unpacks). A dump stops the tree and writes it to an image
directory; a restore brings it back detached (no longer our child), with the pids it had,
so it is then known by its recorded identity and process group. Each step writes its
CRIU log (`-v4`) into the image directory, where it stays with the image.
"""

from __future__ import annotations

import glob
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from llmux_site.core.processes import EngineProcess, exit_code, reap_orphans

__all__ = ["Criu", "CriuError", "DumpResult", "RestoreResult", "clean_shm"]

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


def clean_shm(shm: Path = Path("/dev/shm")) -> list[str]:  # noqa: S108 - the real one
    """Remove CRIU's stale link-remap files; they make the next dump or restore fail."""
    removed = []
    for path in glob.glob(str(shm / "link_remap.*")):
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _bytes_of(directory: Path) -> int:
    return sum(entry.stat().st_size for entry in directory.iterdir() if entry.is_file())


class Criu:
    """One criu binary; `dump` and `restore` block (call them from a thread)."""

    def __init__(self, binary: str, *, timeout: float = 1800.0) -> None:
        self.binary = binary
        self.timeout = timeout

    def _run(self, args: list[str], log: Path, what: str) -> None:
        try:
            done = subprocess.run(
                [self.binary, *args, "-o", str(log), "-v4"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CriuError(f"criu {what} failed: {exc}", log_tail=_tail(log)) from exc
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()
            raise CriuError(
                f"criu {what} exited with status {done.returncode}: {detail}",
                log_tail=_tail(log),
            )

    def dump(self, process: EngineProcess, images_dir: Path) -> DumpResult:
        """Dump the engine tree into `images_dir` (created, must be empty); the tree ends."""
        images_dir.mkdir(parents=True, exist_ok=False)
        clean_shm()
        started = time.monotonic()
        args = ["dump", "--tree", str(process.pid), "--images-dir", str(images_dir), *DUMP]
        self._run(args, images_dir / DUMP_LOG, "dump")
        # The dumped tree has exited: reap what is ours now. A zombie keeps its pid, and the
        # restore needs exactly those pids back ("Can't fork for <pid>: File exists").
        exit_code(process)
        reap_orphans(process.pgid, leader=process.pid)
        return DumpResult(images_dir, _bytes_of(images_dir), time.monotonic() - started)

    def restore(self, images_dir: Path) -> RestoreResult:
        """Restore the tree of `images_dir`, detached; its root process (pid as dumped)."""
        clean_shm()
        pidfile = images_dir / "restored.pid"
        pidfile.unlink(missing_ok=True)
        started = time.monotonic()
        args = ["restore", "--images-dir", str(images_dir), *RESTORE, "--pidfile", str(pidfile)]
        self._run(args, images_dir / RESTORE_LOG, "restore")
        pid = int(pidfile.read_text().split()[0])
        live = _running(pid)
        if live is None:
            raise CriuError(f"criu restore said it restored pid {pid}, which is not running")
        process = EngineProcess(pid=pid, create_time=live.create_time(), pgid=os.getpgid(pid))
        return RestoreResult(process, time.monotonic() - started)


def _running(pid: int) -> psutil.Process | None:
    """The running process `pid`, whatever its create time (a restore gives it a new one)."""
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process
    except psutil.Error:
        return None
