"""The data directory is private to the user llmux runs as: 0700, and its files 0600.

It holds the database (sessions, password hashes, API tokens' hashes), the secret key and
the first admin password, so no other local user may read any of it. Settings set the
process umask to PRIVATE_UMASK before anything is created (child processes, engines
included, inherit it), and tighten what an earlier version or a careless copy left open.
Pure: no Django, so settings can call it before Django is set up.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterable
from pathlib import Path

PRIVATE_UMASK = 0o077
OPEN_TO_OTHERS = 0o077  # any group or other permission bit

log = logging.getLogger("llmux.data_dir")


def tighten(path: Path) -> str | None:
    """Take every group and other bit off `path` (not following a symlink); returns
    "path: 0o755 -> 0o700" when it changed something, else None."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode) or not mode & OPEN_TO_OTHERS:
        return None
    path.chmod(mode & ~OPEN_TO_OTHERS)
    return f"{path}: {oct(mode)} -> {oct(mode & ~OPEN_TO_OTHERS)}"


def make_private(data_dir: Path, directories: Iterable[Path], files: Iterable[Path] = ()) -> None:
    """Tighten the data directory, the given directories, every file directly in the data
    directory and the given files (a database kept elsewhere); each change is logged.

    Deeper files need no visit: no other user can pass a 0700 directory to reach them.
    """
    top = [p for p in data_dir.iterdir() if p.is_file() and not p.is_symlink()]
    for path in [data_dir, *directories, *top, *files]:
        changed = tighten(path)
        if changed is not None:
            log.warning("data directory: tightened %s", changed)
