"""Gateway API keys: the only writer of ApiKey rows but their usage counters.

The web process's table of keys, which reads them and adds up their usage, is
`models_app/adapters/gateway/key_table.py`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from llmux_site.gateway.keys import hash_secret
from models_app import protocol
from models_app.models import ApiKey, KeyKind, ModelAlias, ModelDefinition


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    plaintext: str  # shown once, never stored


def unknown_scopes(scopes: list[str]) -> list[str]:
    """The scopes that name no model and no alias (a typo would grant nothing, silently)."""
    names = set(ModelDefinition.objects.values_list("name", flat=True))
    names |= set(ModelAlias.objects.values_list("name", flat=True))
    return [scope for scope in scopes if scope not in names]


def create_key(
    name: str,
    *,
    scopes: list[str] | None = None,
    rpm_limit: int | None = None,
    expires_at: datetime | None = None,
    created_by: Any = None,
    kind: str = KeyKind.CLIENT,
) -> NewKey:
    prefix = secrets.token_hex(4)
    while ApiKey.objects.filter(prefix=prefix).exists():  # 2^32 prefixes: a clash is rare
        prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        name=name,
        prefix=prefix,
        secret_hash=hash_secret(secret),
        scopes=list(scopes or []),
        rpm_limit=rpm_limit,
        expires_at=expires_at,
        created_by=created_by if getattr(created_by, "is_authenticated", False) else None,
        kind=kind,
    )
    protocol.after_commit(protocol.RegistryChanged())  # web processes reload their key tables
    return NewKey(key, f"llmux-{prefix}-{secret}")


def revoke_key(key: ApiKey) -> None:
    ApiKey.objects.filter(pk=key.pk).update(revoked=True, updated_at=timezone.now())
    protocol.after_commit(protocol.RegistryChanged())


def revoke_user_keys(user: Any, *, kind: str) -> int:
    """Revoke every live key of `kind` made by `user`; how many were."""
    revoked = ApiKey.objects.filter(kind=kind, created_by=user, revoked=False).update(
        revoked=True, updated_at=timezone.now()
    )
    if revoked:
        protocol.after_commit(protocol.RegistryChanged())
    return revoked


def delete_expired(*, kind: str, before: datetime) -> int:
    """Delete the keys of `kind` that expired before `before`; how many were."""
    deleted, _ = ApiKey.objects.filter(kind=kind, expires_at__lt=before).delete()
    if deleted:
        protocol.after_commit(protocol.RegistryChanged())
    return deleted
