"""Strict parsing of the dashboard's query and form parameters.

A malformed value raises `BadParameter`, which the views answer with a 400 naming the
parameter: never silently replaced by a default, and never a 500 (NaN, infinities, dates
that do not exist and integers wider than their column all reach Python or the database
unchecked otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

from django.http import QueryDict
from django.utils import timezone
from django.utils.dateparse import parse_datetime

INT_COLUMN_MAX = 2**31 - 1  # a PositiveIntegerField on PostgreSQL holds no more


class BadParameter(ValueError):
    """A parameter the user sent is malformed; the message says which and why."""


def text(name: str, value: str, *, max_length: int = 256) -> str:
    """A stripped string, without NUL (PostgreSQL refuses it in any string)."""
    value = value.strip()
    if "\x00" in value or len(value) > max_length:
        raise BadParameter(f"{name}: at most {max_length} characters, no NUL")
    return value


def choice(name: str, value: str, allowed: list[str]) -> str:
    """One of `allowed`, or blank (any)."""
    if value and value not in allowed:
        raise BadParameter(f"{name}: expected one of {', '.join(allowed)}")
    return value


def number(name: str, value: str, *, low: float, high: float) -> float:
    """A finite decimal number between `low` and `high` inclusive."""
    try:
        parsed = float(value)
    except ValueError:
        parsed = math.nan
    if not (math.isfinite(parsed) and low <= parsed <= high):
        raise BadParameter(f"{name}: expected a number from {low:g} to {high:g}")
    return parsed


def whole(name: str, value: str, *, low: int = 1, high: int = INT_COLUMN_MAX) -> int:
    """A whole number between `low` and `high` inclusive (digits only: no sign, no 1e3)."""
    digits = value.isascii() and value.isdigit() and len(value) <= len(str(high))
    if not digits or not low <= int(value) <= high:
        raise BadParameter(f"{name}: expected a whole number from {low} to {high}")
    return int(value)


def when(name: str, value: str) -> datetime | None:
    """A date and time (ISO 8601, as `datetime-local` sends it; naive means the site's
    time zone), or None when blank."""
    if not value:
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:  # well formed but no such date, e.g. month 13
        parsed = None
    if parsed is None:
        raise BadParameter(f"{name}: expected a date and time such as 2026-01-31T13:45")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


def known(query: QueryDict, names: Iterable[str]) -> None:
    """Every parameter of `query` is one of `names`, given once: a misspelt filter or a
    second value would otherwise be ignored without a word."""
    allowed = tuple(names)
    for name in query:
        if name not in allowed:
            raise BadParameter(f"{name}: not a parameter here (expected {', '.join(allowed)})")
        if len(query.getlist(name)) > 1:
            raise BadParameter(f"{name}: given more than once")
