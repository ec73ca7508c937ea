"""Failed logins counted per account and per client address; too many lock both out.

Counts live in Django's cache: in the web process's memory in the embedded profile (one
web process), in Redis in production, so every web process shares them. A window starts
at an account's (or address's) first failure and lasts LLMUX_LOGIN_WINDOW_SECS; after
LLMUX_LOGIN_MAX_FAILURES failures for one account, or LLMUX_LOGIN_MAX_FAILURES_PER_ADDRESS
from one address, every attempt is refused, the right password too, until it ends.
Attempts refused while locked are not counted, so the lock ends when its window does.

The trade-off: whoever knows a user name can keep that account locked by failing on
purpose. Guessing passwords at full speed is the worse outcome; the per-address limit
is higher because several users may share one address.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

log = logging.getLogger(__name__)

KEY = "llmux:login-failures:{kind}:{digest}"


@dataclass(frozen=True)
class Attempt:
    """Who tries to log in, and from where (REMOTE_ADDR: the real client behind a
    trusted proxy)."""

    username: str
    address: str

    @property
    def account_key(self) -> str:
        return _key("account", self.username.strip().casefold())

    def keys(self) -> dict[str, int]:
        """Counter key -> the failures it allows, per account and per address."""
        return {
            self.account_key: settings.LLMUX_LOGIN_MAX_FAILURES,
            _key("address", self.address): settings.LLMUX_LOGIN_MAX_FAILURES_PER_ADDRESS,
        }


def _key(kind: str, value: str) -> str:
    # Hashed: user names may hold characters or lengths a cache key may not.
    return KEY.format(kind=kind, digest=hashlib.sha256(value.encode()).hexdigest()[:32])


def locked(attempt: Attempt) -> bool:
    """Whether this account or this address has used up its failures for now."""
    limits = attempt.keys()
    counts = cache.get_many(list(limits))
    return any(counts.get(key, 0) >= limit for key, limit in limits.items())


def record_failure(attempt: Attempt) -> None:
    """Count one failed login against the account and the address."""
    window = settings.LLMUX_LOGIN_WINDOW_SECS
    for key, limit in attempt.keys().items():
        cache.add(key, 0, timeout=window)  # opens the window at the first failure
        try:
            count = cache.incr(key)
        except ValueError:  # the window ended between add and incr: a new one
            cache.add(key, 1, timeout=window)
            count = 1
        if count == limit:
            log.warning(
                "login: %s locked for %s s after %s failed logins (user %r from %s)",
                key.split(":")[2],
                window,
                count,
                attempt.username[:64],
                attempt.address,
            )


def record_success(attempt: Attempt) -> None:
    """The account's failures are forgiven (the address's are not: one good account
    must not wipe an address's guesses at others)."""
    cache.delete(attempt.account_key)


def window_minutes() -> int:
    """The lock's length, rounded up to whole minutes, for the message shown."""
    return max(1, -(-int(settings.LLMUX_LOGIN_WINDOW_SECS) // 60))
