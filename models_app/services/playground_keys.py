"""The playground's gateway keys: short-lived, minted for the logged-in user, audited.

The playground sends its requests to `/v1/` as any client does, with a key, so `/v1/`
never has to accept session cookies (which would let another site's page make a
logged-in operator's browser call it). The page asks the dashboard for a key (session and
CSRF token required), keeps it in memory only, and asks again when it expires. A minted
key is an ApiKey row of kind `playground`: the gateway's key table reads it like any
other (a new prefix makes a web process read the keys at once), scoped to the models the
user may use, expiring after KEY_TTL, limited to KEY_RPM requests a minute. Rows expired
for KEEP_EXPIRED are deleted (at each mint and by the worker's sweep); logging out
revokes the user's live ones. docs/API.md, *Playground keys*.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from models_app.models import ApiKey, KeyKind, ModelDefinition
from models_app.roles import can_act
from models_app.services import api_keys
from models_app.services.acting import Acting, ActionError, Outcome, StateError, audited

ACTION = "mint_playground_key"
KEY_TTL = timedelta(minutes=10)  # long enough for a conversation, short if it leaks
# A stream that began before its key expired adds its usage when it ends: keep the row
# that long (a request waits at most request_timeout_secs, 300 s by default, to start).
KEEP_EXPIRED = timedelta(hours=1)
LIVE_PER_USER = 20  # a page mints one at a time; this bounds a script minting in a loop
KEY_RPM = 60  # a person at a prompt sends a few a minute; a leaked key does little more
NAME_MAX = 128  # ApiKey.name


class NothingToUse(StateError):
    """No model the user may use: a key with no scope would grant every model."""


class TooManyKeys(ActionError):
    """The user holds LIVE_PER_USER live playground keys already."""


@dataclass(frozen=True)
class MintedKey:
    """A new playground key: its plaintext goes to the page, never to a log."""

    plaintext: str
    expires_at: datetime
    models: list[str]


def usable_models(user: Any) -> list[str]:
    """The models `user` may send requests to: every enabled model for those who may act,
    none for viewers (a request for a model that is not up switches to it, an action)."""
    if not can_act(user):
        return []
    return sorted(ModelDefinition.objects.filter(enabled=True).values_list("name", flat=True))


def do_mint_playground_key(*, acting: Acting) -> MintedKey:
    """A key for `acting.user`'s playground; viewers are refused, both audited."""
    name = f"playground · {acting.name}"[:NAME_MAX]
    with audited(acting, ACTION, name) as done:
        now = timezone.now()
        with transaction.atomic():
            delete_expired(now)
            models = usable_models(acting.user)
            if not models:  # an empty scope list means every model: never mint one
                raise NothingToUse("no enabled model to send requests to")
            if _live(acting.user, now) >= LIVE_PER_USER:
                raise TooManyKeys(
                    f"{LIVE_PER_USER} playground keys are live for this user: "
                    f"wait for one to expire (they last {_minutes(KEY_TTL)})"
                )
            created = api_keys.create_key(
                name,
                scopes=models,
                rpm_limit=KEY_RPM,
                expires_at=now + KEY_TTL,
                created_by=acting.user,
                kind=KeyKind.PLAYGROUND,
            )
        expires = created.key.expires_at
        assert expires is not None
        detail = f"key {created.key.prefix}, until {expires:%H:%M:%S} UTC, for {', '.join(models)}"
        done(Outcome(f"playground key {created.key.prefix} minted", detail=detail))
        return MintedKey(created.plaintext, expires, models)


def _live(user: Any, now: datetime) -> int:
    return ApiKey.objects.filter(
        kind=KeyKind.PLAYGROUND, created_by=user, revoked=False, expires_at__gt=now
    ).count()


def _minutes(span: timedelta) -> str:
    return f"{int(span.total_seconds() // 60)} minutes"


def delete_expired(now: datetime | None = None) -> int:
    """Delete the playground keys expired KEEP_EXPIRED ago or more."""
    return api_keys.delete_expired(
        kind=KeyKind.PLAYGROUND, before=(now or timezone.now()) - KEEP_EXPIRED
    )


def revoke_at_logout(user: Any) -> int:
    """A user who logs out leaves no playground key working behind."""
    if user is None or not getattr(user, "is_authenticated", False):
        return 0
    return api_keys.revoke_user_keys(user, kind=KeyKind.PLAYGROUND)
