"""Filesystem paths from a config or the API: normalised and confined to configured roots.

A path with a `..` component is refused outright (whatever it resolves to), and every
absolute path must lie under one of LLMUX_PATH_ROOTS once normalised, so a model
definition cannot point llmux (which runs CRIU as root) at /etc or another tenant's files.
That holds for what the REST API and the dashboard write; a file an administrator imports
from the command line is trusted and only needs absolute paths (`absolute`; docs/CONFIG.md,
"Who may set what").
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath

from django.conf import settings

from llmux_site.core.config import FieldError


def roots() -> list[str]:
    return [os.path.normpath(str(root)) for root in settings.LLMUX_PATH_ROOTS]


def confine(value: str | None, where: str, *, path_like_only: bool = False) -> FieldError | None:
    """None when `value` is fine; else why not.

    `path_like_only`: the value may also be a name that is not a path (a model id like
    `Qwen/Qwen2.5-7B`): only an absolute path or one with `..` is checked then.
    """
    if not value:
        return None
    parts = PurePosixPath(value).parts
    if ".." in parts:
        return FieldError(where, f"{value!r} contains '..': give the path without it")
    if not value.startswith("/"):
        if path_like_only:
            return None
        return FieldError(where, f"{value!r} must be an absolute path")
    normal = os.path.normpath(value)
    if any(normal == root or normal.startswith(root.rstrip("/") + "/") for root in roots()):
        return None
    return FieldError(
        where, f"{value!r} is outside the allowed roots ({', '.join(roots())}; LLMUX_PATH_ROOTS)"
    )


def absolute(value: str | None, where: str, *, path_like_only: bool = False) -> FieldError | None:
    """None when `value` is unset, absolute, or (`path_like_only`) may be a name; else why not.
    A relative path would depend on the directory the worker happens to start in."""
    if not value or value.startswith("/") or path_like_only:
        return None
    return FieldError(where, f"{value!r} must be an absolute path")
