"""Failed logins counted per account and per client address; too many lock both out.

Counts live in the database (`LoginFailures`), which every web process shares, whichever
the profile and however many web processes `llmux serve` runs. A window starts at an
account's (or address's) first failure and lasts LLMUX_LOGIN_WINDOW_SECS; after
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
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from models_app.models import LoginFailures

log = logging.getLogger(__name__)

KEY = "{kind}:{digest}"


def now() -> datetime:
    """The clock windows are measured by (a test moves it instead of waiting)."""
    return timezone.now()


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
    # Hashed: user names may hold any characters, at any length.
    return KEY.format(kind=kind, digest=hashlib.sha256(value.encode()).hexdigest()[:32])


def locked(attempt: Attempt) -> bool:
    """Whether this account or this address has used up its failures for now."""
    limits = attempt.keys()
    open_windows = LoginFailures.objects.filter(key__in=list(limits), ends_at__gt=now())
    counts = dict(open_windows.values_list("key", "count"))
    return any(counts.get(key, 0) >= limit for key, limit in limits.items())


@transaction.atomic
def record_failure(attempt: Attempt) -> None:
    """Count one failed login against the account and the address."""
    at = now()
    LoginFailures.objects.filter(ends_at__lte=at).delete()  # ended windows count for nothing
    for key, limit in attempt.keys().items():
        count = _count(key, at)
        if count == limit:
            log.warning(
                "login: %s locked for %s s after %s failed logins (user %r from %s)",
                key.split(":")[0],
                settings.LLMUX_LOGIN_WINDOW_SECS,
                count,
                attempt.username[:64],
                attempt.address,
            )


def _count(key: str, at: datetime) -> int:
    """One more failure in `key`'s open window, or the first of a new one: the count."""
    # One UPDATE adds to the open window, atomically on SQLite and PostgreSQL alike.
    if LoginFailures.objects.filter(key=key, ends_at__gt=at).update(count=F("count") + 1):
        return LoginFailures.objects.values_list("count", flat=True).get(key=key)
    ends_at = at + timedelta(seconds=settings.LLMUX_LOGIN_WINDOW_SECS)
    LoginFailures.objects.update_or_create(key=key, defaults={"count": 1, "ends_at": ends_at})
    return 1


def record_success(attempt: Attempt) -> None:
    """The account's failures are forgiven (the address's are not: one good account
    must not wipe an address's guesses at others)."""
    LoginFailures.objects.filter(key=attempt.account_key).delete()


def window_minutes() -> int:
    """The lock's length, rounded up to whole minutes, for the message shown."""
    return max(1, -(-int(settings.LLMUX_LOGIN_WINDOW_SECS) // 60))
