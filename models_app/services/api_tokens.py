"""Management API tokens: the only writer of ApiToken rows, and the check of a presented one.

A token is a random string; the row keeps its first PREFIX_LENGTH characters (to find it)
and the SHA-256 of the whole token, compared in constant time. Tokens made by DRF's
authtoken before this (40 hexadecimal characters) were converted the same way by
migration 0008, so automation holding one keeps working.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from models_app.models import ApiToken

PREFIX_LENGTH = 8
MAX_TOKEN_LENGTH = 256  # a longer header value is no token of ours: not even hashed


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    plaintext: str  # shown once, never stored


def token_hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_token(user: Any, *, name: str = "") -> NewToken:
    """A new token for `user`; the plaintext is in the answer, this once."""
    plaintext = secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=plaintext[:PREFIX_LENGTH],
        token_hash=token_hash(plaintext),
    )
    return NewToken(token, plaintext)


def user_for(plaintext: str) -> Any | None:
    """The active user `plaintext` is a token of, or None."""
    if not plaintext or len(plaintext) > MAX_TOKEN_LENGTH:
        return None
    presented = token_hash(plaintext)
    # Every row with this prefix is compared, each in constant time: a prefix shared by
    # two tokens (converted ones were not made to avoid it) costs a comparison, not access.
    found = None
    rows = ApiToken.objects.filter(prefix=plaintext[:PREFIX_LENGTH]).select_related("user")
    for row in rows:
        if hmac.compare_digest(row.token_hash, presented):
            found = row.user
    return found if found is not None and found.is_active else None
