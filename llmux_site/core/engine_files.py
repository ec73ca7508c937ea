"""Files an engine leaves on disk: its Unix socket and its private temporary directory.

Real vLLM removes neither: its listening socket stays after it exits (even after a failed
start) and a later bind over it fails with "Address already in use"; each start leaves
about seven ZeroMQ socket files and a `vllm_dist_*` file in its temporary directory. So
llmux removes a stale socket before a start and gives each engine a private TMPDIR that a
start empties and a stop removes. Pure core: paths in, no Django.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import stat

__all__ = [
    "PRIVATE_TMP_MODE",
    "EngineFilesError",
    "ensure_private_tmp",
    "prepare_private_tmp",
    "private_root",
    "remove_engine_files",
    "remove_private_tmp",
    "remove_stale_socket",
]

logger = logging.getLogger(__name__)

PRIVATE_TMP_MODE = 0o700
_CONNECT_TIMEOUT = 1.0


class EngineFilesError(OSError):
    """A path meant for an engine's own files is something else (a link, another file)."""


def remove_stale_socket(path: str) -> bool:
    """Remove the Unix socket at `path` if nothing listens on it; True if it was removed.

    A live listener (another server, or an engine we lost track of) is left alone: the
    engine's own bind then fails and says so. Anything that is not a socket is left too.
    """
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except FileNotFoundError:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_CONNECT_TIMEOUT)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        pass  # a socket file without a listener: what a dead engine leaves behind
    except OSError:
        return False  # cannot tell (a full backlog, no permission): leave it
    else:
        return False  # something listens
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return True


def _empty(directory: str) -> None:
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def prepare_private_tmp(path: str) -> None:
    """Create the engine's temporary directory (0700), emptied of an earlier run's files."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkdir(path, PRIVATE_TMP_MODE)
        return
    if not stat.S_ISDIR(info.st_mode):
        raise EngineFilesError(f"{path} should be an engine's temporary directory but is not")
    os.chmod(path, PRIVATE_TMP_MODE)
    _empty(path)


def private_root(path: str) -> None:
    """Make sure `path` is a directory only this user can use (created 0700 if missing).

    In a shared temporary directory another user could have made it first, to read or
    replace what the engines put there: refused unless it is ours and private.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, PRIVATE_TMP_MODE)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise EngineFilesError(f"{path} is not a directory of this user's own: refused")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, PRIVATE_TMP_MODE)


def ensure_private_tmp(path: str) -> None:
    """The engine's temporary directory, created (0700) if a stop removed it, never emptied:
    an engine restored from a checkpoint finds its sockets and files where it left them."""
    with contextlib.suppress(FileExistsError):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.mkdir(path, PRIVATE_TMP_MODE)
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise EngineFilesError(f"{path} should be an engine's temporary directory but is not")


def remove_private_tmp(path: str) -> None:
    """Remove the engine's temporary directory and everything in it (a link is not followed)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path, ignore_errors=True)


def remove_engine_files(*, tmp_dir: str | None, uds: str | None) -> None:
    """After an engine stopped: its temporary directory, and its socket if nothing listens.

    Never after a checkpoint: a restored engine needs both where they were.
    """
    try:
        if tmp_dir:
            remove_private_tmp(tmp_dir)
        if uds:
            remove_stale_socket(uds)
    except OSError as exc:  # leftovers are cleaned at the next start anyway
        logger.warning("could not remove the files of a stopped engine: %s", exc)
