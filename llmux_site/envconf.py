"""Strict readers for `LLMUX_*` environment variables.

Each reader raises `ImproperlyConfigured` naming the variable, so a typo in a deployment
stops start-up with a message an operator can act on instead of a default silently taking
over.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _raw(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    return default if value is None else value


def env_optional(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    return _raw(name, environ)


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}: expected true or false (1/0, yes/no), got {value!r}")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected a whole number, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}: must be at most {maximum}, got {number}")
    return number


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def env_size(
    name: str, default: int | None, environ: Mapping[str, str] | None = None
) -> int | None:
    """Bytes from `1048576`, `512MiB`, `200G` or `1.5TiB` (binary units); unset: default."""
    value = _raw(name, environ)
    if value is None:
        return default
    match = _SIZE.match(value)
    if not match:
        raise ImproperlyConfigured(f"{name}: expected a size such as 200GiB, got {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def env_list(name: str, default: list[str], environ: Mapping[str, str] | None = None) -> list[str]:
    value = _raw(name, environ)
    if value is None:
        return list(default)
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise ImproperlyConfigured(f"{name}: empty item in comma-separated list {value!r}")
    return items


def env_choice(
    name: str, default: str, choices: tuple[str, ...], environ: Mapping[str, str] | None = None
) -> str:
    value = _raw(name, environ)
    if value is None:
        return default
    if value not in choices:
        raise ImproperlyConfigured(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def env_path(name: str, default: Path, environ: Mapping[str, str] | None = None) -> Path:
    value = _raw(name, environ)
    path = default if value is None else Path(value)
    return path.expanduser().resolve()


def env_url(
    name: str, schemes: tuple[str, ...], environ: Mapping[str, str] | None = None
) -> str | None:
    value = _raw(name, environ)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ImproperlyConfigured(
            f"{name}: expected a URL starting with {' or '.join(s + '://' for s in schemes)}, "
            f"got scheme {parts.scheme or '(none)'!r}"
        )
    if not parts.hostname and not parts.path.strip("/"):
        raise ImproperlyConfigured(f"{name}: URL has no host or database name")
    try:
        _ = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{name}: URL has an invalid port") from None
    return value


def env_ports(name: str, default: str, environ: Mapping[str, str] | None = None) -> frozenset[int]:
    """Ports from `22,80,1-1023,5432` (single ports and inclusive ranges)."""
    value = _raw(name, environ)
    ports: set[int] = set()
    for item in (default if value is None else value).split(","):
        low, _, high = item.strip().partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item.strip()!r} is not a port or range") from None
        if not 1 <= first <= last <= 65535:
            raise ImproperlyConfigured(f"{name}: {item.strip()!r} is not within 1-65535")
        ports.update(range(first, last + 1))
    return frozenset(ports)
