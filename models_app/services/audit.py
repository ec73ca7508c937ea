"""The only writer of AuditEntry rows."""

from __future__ import annotations

from typing import Any

from models_app.models import AuditEntry, AuditResult


def record(
    user: Any,
    action: str,
    target: str = "",
    *,
    result: str = AuditResult.OK,
    detail: str = "",
    source: str = "dashboard",
    remote_addr: str = "",
) -> AuditEntry:
    """Record one management action (also a refused one: refusals are worth auditing)."""
    authenticated = user is not None and getattr(user, "is_authenticated", False)
    return AuditEntry.objects.create(
        actor=user if authenticated else None,
        actor_name=user.get_username() if authenticated else "",
        action=action,
        target=_printable(target)[:256],
        source=source,
        remote_addr=remote_addr[:64],
        result=result,
        detail=_printable(detail),
    )


def _printable(text: str) -> str:
    """`text` without NUL bytes, which PostgreSQL refuses in text columns: a refused write
    whose input held one (a config key, a model name) must still be audited."""
    return text.replace("\x00", "\\x00")
