"""Read-side queries of per-request activity: the requests view, and the overview's rates."""

from __future__ import annotations

import datetime
from typing import Any, TypedDict

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from models_app.models import ActivitySettings, ApiKey, LiveRequests, RequestRecord

LIVE_STALE_S = 15.0  # a report older than this is a dead process's (3 of its heartbeats)
RATE_WINDOW_S = 60.0  # the overview's requests/s and tokens/s are over the last minute
STATUS_CLASSES = ["ok", "error", "cancelled"]


class RequestRow(TypedDict):
    """One finished request, as the requests view shows it."""

    id: int
    started_at: str
    model: str
    who: str  # the key's name, else the client's address
    path: str
    stream: bool
    status: int
    cancelled: bool
    wait_ms: float | None
    ttft_ms: float | None
    duration_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_per_s: float | None
    prompt_text: str  # only for administrators, and only what capture kept
    completion_text: str


class LiveRow(TypedDict):
    """One request in flight in some web process."""

    instance: str
    id: str
    started_at: str
    elapsed_s: float
    model: str
    who: str
    path: str
    stream: bool
    waiting: bool
    wait_s: float | None


class ModelRate(TypedDict):
    """A model's traffic over the last RATE_WINDOW_S seconds (the overview)."""

    requests_per_s: float
    tokens_per_s: float


def _key_names(ids: set[int]) -> dict[int, str]:
    return dict(ApiKey.objects.filter(pk__in=ids).values_list("pk", "name")) if ids else {}


def tokens_per_s(record: RequestRecord) -> float | None:
    """Completion tokens over the generation time: after the first byte for a stream (its
    first token), the whole duration for an answer sent in one piece."""
    if not record.completion_tokens:
        return None
    spent = record.duration_ms - ((record.ttft_ms or 0.0) if record.stream else 0.0)
    return round(record.completion_tokens * 1000 / spent, 1) if spent > 0 else None


def filtered(
    *,
    model: str = "",
    status: str = "",
    who: str = "",
    since: datetime.datetime | None = None,
) -> QuerySet[RequestRecord]:
    """Finished requests matching the view's filters (each blank: any)."""
    rows = RequestRecord.objects.all()
    if model:
        rows = rows.filter(model=model)
    if status == "ok":
        rows = rows.filter(status__lt=400, cancelled=False)
    elif status == "error":
        rows = rows.filter(status__gte=400, cancelled=False)
    elif status == "cancelled":
        rows = rows.filter(cancelled=True)
    if who:
        keys = ApiKey.objects.filter(name__icontains=who).values_list("pk", flat=True)
        rows = rows.filter(Q(client__icontains=who) | Q(key_id__in=list(keys)))
    if since is not None:
        rows = rows.filter(started_at__gte=since)
    return rows


def recent_requests(limit: int, *, with_text: bool = False, **filters: Any) -> list[RequestRow]:
    """The newest finished requests matching `filters` (see `filtered`)."""
    records = list(filtered(**filters)[:limit])
    names = _key_names({r.key_id for r in records if r.key_id is not None})
    return [
        {
            "id": r.pk,
            "started_at": r.started_at.isoformat(),
            "model": r.model,
            "who": names.get(r.key_id, f"key {r.key_id}") if r.key_id is not None else r.client,
            "path": r.path,
            "stream": r.stream,
            "status": r.status,
            "cancelled": r.cancelled,
            "wait_ms": r.wait_ms,
            "ttft_ms": r.ttft_ms,
            "duration_ms": r.duration_ms,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "tokens_per_s": tokens_per_s(r),
            "prompt_text": r.prompt_text if with_text else "",
            "completion_text": r.completion_text if with_text else "",
        }
        for r in records
    ]


def live_requests() -> list[LiveRow]:
    """Every web process's requests in flight, oldest first (dead processes' left out)."""
    fresh = timezone.now() - datetime.timedelta(seconds=LIVE_STALE_S)
    reports = LiveRequests.objects.filter(updated_at__gte=fresh).values_list("instance", "requests")
    entries = [(instance, r) for instance, rows in reports for r in rows or ()]
    names = _key_names({r["key_id"] for _, r in entries if r.get("key_id") is not None})
    live: list[LiveRow] = [
        {
            "instance": instance,
            "id": str(r["id"]),
            "started_at": datetime.datetime.fromtimestamp(
                r["started_at"], datetime.UTC
            ).isoformat(),
            "elapsed_s": float(r["elapsed_s"]),
            "model": str(r["model"]),
            "who": names.get(r["key_id"], "") if r.get("key_id") is not None else r["client"],
            "path": str(r["path"]),
            "stream": bool(r["stream"]),
            "waiting": bool(r["waiting"]),
            "wait_s": r.get("wait_s"),
        }
        for instance, r in entries
    ]
    return sorted(live, key=lambda row: row["started_at"])


def model_rates(window_s: float = RATE_WINDOW_S) -> dict[str, ModelRate]:
    """Requests/s and completion tokens/s per model over the last `window_s` seconds."""
    since = timezone.now() - datetime.timedelta(seconds=window_s)
    rows = (
        RequestRecord.objects.filter(started_at__gte=since)
        .values("model")
        .annotate(n=Count("id"), tokens=Sum("completion_tokens"))
    )
    return {
        row["model"]: {
            "requests_per_s": round(row["n"] / window_s, 2),
            "tokens_per_s": round((row["tokens"] or 0) / window_s, 1),
        }
        for row in rows
    }


def capture_state() -> dict[str, Any]:
    """Whether capture is on, who changed it and when (the requests view's admin panel)."""
    row = ActivitySettings.objects.filter(pk=ActivitySettings.SINGLETON_PK).first()
    if row is None:
        return {"capture": False, "changed_by": "", "changed_at": None}
    changed = row.changed_at.isoformat() if row.changed_at else None
    return {"capture": row.capture, "changed_by": row.changed_by, "changed_at": changed}
