"""The files in /dev/shm a CRIU image depends on, kept with the image (ENGINE_CONTRACT §4, §6).

A real vLLM's image is not self-contained: its processes map shared-memory files of
vLLM's own (`/dev/shm/psm_*`, its IPC queues; 160 and 240 MiB, sparse) which CRIU records
by path, not by content, and a semaphore file deleted but still open is kept by CRIU as
`/dev/shm/link_remap.N` (a name CRIU reuses for every vLLM dump), which the restore opens
and then removes. So after a dump those files go into the image directory (`shm/`), and
before each restore they are put back, so an image can be restored again and again
(`keep_images`), and no cleanup of /dev/shm can delete a file another image needs.

/dev/shm is shared by every engine of the host: dumps and restores handle it one at a
time, under one host-wide lock (`shm_lock`). Pure core.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "SHM",
    "clean_link_remaps",
    "put_back",
    "save_after_dump",
    "shm_files_of",
    "shm_lock",
]

SHM = Path("/dev/shm")  # noqa: S108 - the real one
SAVED = "shm"  # the image's subdirectory
_CHUNK = 1 << 20
_local = threading.Lock()  # fcntl locks are per process: threads of one queue here first


@contextlib.contextmanager
def shm_lock(lock_file: Path) -> Iterator[None]:
    """Hold the host-wide lock on /dev/shm's CRIU files (every process of the host)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with _local, open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clean_link_remaps(shm: Path = SHM) -> list[str]:
    """Remove CRIU's link-remap files left in /dev/shm (every image keeps its own copies).

    Only under `shm_lock`: a restore that has just put its files back must not lose them.
    """
    removed = []
    for path in glob.glob(str(shm / "link_remap.*")):
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed.append(path)
    return removed


def shm_files_of(pids: Iterable[int], shm: Path = SHM) -> set[Path]:
    """The files under /dev/shm the processes map or hold open (deleted ones excepted)."""
    found: set[Path] = set()
    prefix = str(shm) + "/"
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                fields = line.split(maxsplit=5)  # address perms offset dev inode path
                path = fields[5] if len(fields) == 6 else ""
                if path.startswith(prefix) and not path.endswith(" (deleted)"):
                    found.add(Path(path))
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith(prefix) and not target.endswith(" (deleted)"):
                        found.add(Path(target))
    return found


def save_after_dump(images_dir: Path, mapped: Iterable[Path], shm: Path = SHM) -> list[str]:
    """Move the dump's link-remap files and the dead tree's shared-memory files into the
    image; the names saved. Under `shm_lock`, after a dump that ended the tree."""
    saved_dir = images_dir / SAVED
    saved_dir.mkdir(exist_ok=True)
    names = []
    for path in [*map(Path, glob.glob(str(shm / "link_remap.*"))), *mapped]:
        if not path.exists():
            continue
        _sparse_copy(path, saved_dir / path.name)
        path.unlink(missing_ok=True)  # the tree that used it is gone
        names.append(path.name)
    return sorted(names)


def put_back(images_dir: Path, shm: Path = SHM) -> list[str]:
    """Copy the image's saved /dev/shm files back, before its restore (under `shm_lock`)."""
    saved_dir = images_dir / SAVED
    if not saved_dir.is_dir():
        return []
    names = []
    for saved in sorted(saved_dir.iterdir()):
        _sparse_copy(saved, shm / saved.name)
        names.append(saved.name)
    return names


def _sparse_copy(source: Path, target: Path) -> None:
    """Copy `source` to `target` (mode kept), writing only its data: vLLM's queues are
    hundreds of MiB of holes."""
    tmp = target.with_name(f".{target.name}.llmux-tmp")
    with open(source, "rb") as src, open(tmp, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError:  # only a hole is left
                break
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            src.seek(start)
            dst.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = src.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                dst.write(chunk)
                remaining -= len(chunk)
            offset = end
        dst.truncate(size)
    shutil.copymode(source, tmp)
    os.replace(tmp, target)
