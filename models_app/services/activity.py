"""The writers of per-request activity: batches of finished requests, each web process's
requests in flight, retention, an operator's cancel and an admin's capture switch."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from llmux_site.gateway.activity import FinishedRequest
from models_app import protocol
from models_app.models import ActivitySettings, AuditResult, LiveRequests, RequestRecord
from models_app.services.acting import Acting, ActionError, Outcome, audited

UTC = datetime.UTC


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _record(instance: str, done: FinishedRequest) -> RequestRecord:
    return RequestRecord(
        request_id=done.request_id,
        started_at=datetime.datetime.fromtimestamp(done.started_at, UTC),
        path=done.path[:32],
        model=done.model[:128],
        key_id=done.key_id,
        client=done.client[:64],
        stream=done.stream,
        status=done.status,
        cancelled=done.cancelled,
        wait_ms=_ms(done.wait_s),
        ttft_ms=_ms(done.ttft_s),
        duration_ms=_ms(done.duration_s) or 0.0,
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        instance=instance[:64],
        prompt_text=done.prompt_text or "",
        completion_text=done.completion_text or "",
    )


def write_finished(instance: str, finished: Sequence[FinishedRequest]) -> None:
    """Insert one batch of finished requests of web process `instance` (one statement per
    batch of 500: a second of traffic costs a handful of inserts, never one per request)."""
    RequestRecord.objects.bulk_create([_record(instance, done) for done in finished], 500)


def report_live(instance: str, pid: int, rows: list[dict[str, Any]]) -> None:
    """Replace what web process `instance` reports in flight."""
    LiveRequests.objects.update_or_create(
        instance=instance, defaults={"pid": pid, "requests": rows, "updated_at": timezone.now()}
    )


def forget_live(instance: str) -> None:
    """Web process `instance` stops (nothing of it is in flight any more)."""
    LiveRequests.objects.filter(instance=instance).delete()


def prune(*, hours: int, max_rows: int) -> int:
    """Delete finished requests older than `hours` or beyond the newest `max_rows`; how
    many went."""
    cutoff = timezone.now() - datetime.timedelta(hours=hours)
    deleted, _ = RequestRecord.objects.filter(started_at__lt=cutoff).delete()
    # The id of the oldest row kept: ids grow with inserts, close enough to arrival order.
    kept = RequestRecord.objects.order_by("-id").values_list("id", flat=True)[
        max_rows : max_rows + 1
    ]
    if kept:
        more, _ = RequestRecord.objects.filter(id__lte=kept[0]).delete()
        deleted += more
    return deleted


def live_request(instance: str, request_id: str) -> dict[str, Any] | None:
    """The request `request_id` as web process `instance` last reported it in flight."""
    row = LiveRequests.objects.filter(instance=instance).values_list("requests", flat=True).first()
    return next((r for r in row or () if r.get("id") == request_id), None)


def do_cancel_request(instance: str, request_id: str, *, acting: Acting) -> Outcome:
    """An operator cancels a request in flight: its web process ends it (the client sees
    an OpenAI-shaped error, or its stream stop). Refused for viewers; audited."""
    target = f"request {request_id}"
    with audited(acting, "cancel_request", target) as done:
        request = live_request(instance, request_id)
        if request is None:
            raise ActionError(f"request {request_id} is not in flight (it may have ended)")
        protocol.publish(protocol.CancelRequest(instance, request_id))
        model = request.get("model", "")
        return done(Outcome(f"cancel of request {request_id} ({model}) sent", AuditResult.OK))


def do_set_capture(capture: bool, *, acting: Acting) -> Outcome:
    """Turn the capture of prompt and answer text on or off (administrators only)."""
    word = "on" if capture else "off"
    acting.refuse_non_admins("capture", word)
    with transaction.atomic():
        ActivitySettings.objects.update_or_create(
            pk=ActivitySettings.SINGLETON_PK,
            defaults={"capture": capture, "changed_by": acting.name, "changed_at": timezone.now()},
        )
        protocol.after_commit(protocol.CaptureChanged(capture))
    acting.record("capture", word, AuditResult.OK, f"prompt and answer capture {word}")
    return Outcome(f"capture of prompts and answers is {word}")
