"""The only writer of AuditEntry rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import F, Value
from django.db.models.functions import Concat

from models_app.models import AuditEntry, AuditResult, BringUp, SwitchRequest, SwitchStatus


def record(
    user: Any,
    action: str,
    target: str = "",
    *,
    result: str = AuditResult.OK,
    detail: str = "",
    source: str = "dashboard",
    remote_addr: str = "",
    operation: int | None = None,
) -> AuditEntry:
    """Record one management action (also a refused one: refusals are worth auditing).

    `operation`: the lifecycle operation it queued; the entry gets its outcome when it ends
    (at once, where a fast worker ended it before this entry was written)."""
    authenticated = user is not None and getattr(user, "is_authenticated", False)
    entry = AuditEntry.objects.create(
        actor=user if authenticated else None,
        actor_name=user.get_username() if authenticated else "",
        action=action,
        target=_printable(target)[:256],
        source=source,
        remote_addr=remote_addr[:64],
        result=result,
        detail=_printable(detail),
        operation=operation,
    )
    if operation is not None and result == AuditResult.QUEUED:
        close_operations([operation])
    return entry


CLOSED = (SwitchStatus.SUCCEEDED, SwitchStatus.FAILED, SwitchStatus.SKIPPED)


def outcome_of(request: SwitchRequest) -> tuple[str, str]:
    """(audit result, what happened) of an operation that ended."""
    error = request.error.strip()
    if request.status == SwitchStatus.FAILED:
        return AuditResult.FAILED, f"failed: {error or 'no reason recorded'}"
    if request.status == SwitchStatus.SKIPPED:
        return AuditResult.SKIPPED, f"skipped: {error or 'nothing to do'}"
    swap = request.swap
    if swap is None or swap.bringup == BringUp.ALREADY_ACTIVE:
        return AuditResult.OK, "done: nothing to do, it was already so"
    if swap.escalated:
        return AuditResult.OK, f"done, escalated to stop: {swap.error.strip() or 'no reason'}"
    return AuditResult.OK, "succeeded"


def close_operations(ids: Iterable[int]) -> None:
    """Give the queued audit entries of these operations their outcome, where they ended."""
    ended = SwitchRequest.objects.filter(pk__in=list(ids), status__in=CLOSED).select_related("swap")
    for request in ended:
        result, what = outcome_of(request)
        AuditEntry.objects.filter(operation=request.pk, result=AuditResult.QUEUED).update(
            result=result, detail=Concat(F("detail"), Value(f" → {_printable(what)}"))
        )


def _printable(text: str) -> str:
    """`text` without NUL bytes, which PostgreSQL refuses in text columns: a refused write
    whose input held one (a config key, a model name) must still be audited."""
    return text.replace("\x00", "\\x00")
