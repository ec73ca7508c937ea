"""The requests view's data, an operator's cancel and the admin's capture switch, with real
rows in SQLite (the roles of each URL are in test_roles.py's matrix)."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.utils import timezone

from llmux_site.core.notify import LocalBus
from llmux_site.gateway.activity import FinishedRequest
from models_app import activity_selectors, protocol
from models_app.models import ActivitySettings, ApiKey, AuditEntry, RequestRecord
from models_app.services import activity as activity_service
from tests.dashboard.test_roles import client_for

pytestmark = pytest.mark.django_db


def finished(model: str = "alpha", **fields: object) -> FinishedRequest:
    values: dict[str, object] = {
        "request_id": "ab-1",
        "started_at": time.time(),
        "path": "/v1/chat/completions",
        "model": model,
        "key_id": None,
        "client": "127.0.0.1",
        "stream": True,
        "status": 200,
        "cancelled": False,
        "wait_s": 0.5,
        "ttft_s": 0.1,
        "duration_s": 1.1,
        "prompt_tokens": 12,
        "completion_tokens": 50,
        "prompt_text": None,
        "completion_text": None,
    }
    values.update(fields)
    return FinishedRequest(**values)  # type: ignore[arg-type]


@pytest.fixture
def bus_messages(tmp_path: Path, settings: object) -> Iterator[object]:
    """What is published on this host's bus during the test, read by a real listener."""
    protocol.bus.cache_clear()
    settings.LLMUX_DIRS = {**settings.LLMUX_DIRS, "run": tmp_path}  # type: ignore[attr-defined]
    listener = LocalBus(tmp_path / "notify").listen_sync()
    try:
        yield listener
    finally:
        listener.close()
        protocol.bus.cache_clear()


def test_the_data_lists_finished_requests_with_their_figures_and_key_names() -> None:
    key = ApiKey.objects.create(name="team-a", prefix="p1", secret_hash="x")
    activity_service.write_finished("web-1", [finished(key_id=key.pk), finished("beta")])
    data = client_for("viewer").get("/requests/data/?model=alpha").json()
    (row,) = data["finished"]
    assert (row["model"], row["who"], row["status"]) == ("alpha", "team-a", 200)
    assert (row["wait_ms"], row["ttft_ms"], row["duration_ms"]) == (500.0, 100.0, 1100.0)
    assert row["tokens_per_s"] == 50.0  # 50 tokens after the first, in 1 s
    assert data["can_cancel"] is False


def test_the_filters_select_by_status_and_who_and_refuse_nonsense() -> None:
    activity_service.write_finished(
        "web-1",
        [finished(), finished(status=503, client="10.0.0.9"), finished(cancelled=True)],
    )
    viewer = client_for("viewer")
    assert len(viewer.get("/requests/data/?status=error").json()["finished"]) == 1
    assert len(viewer.get("/requests/data/?status=cancelled").json()["finished"]) == 1
    assert len(viewer.get("/requests/data/?who=10.0.0").json()["finished"]) == 1
    assert viewer.get("/requests/data/?status=maybe").status_code == 400
    assert viewer.get("/requests/data/?rows=0").status_code == 400


def test_in_flight_requests_come_from_every_fresh_report_only() -> None:
    row = {
        "id": "ab-7",
        "started_at": time.time(),
        "elapsed_s": 3.0,
        "path": "/v1/completions",
        "model": "alpha",
        "key_id": None,
        "client": "127.0.0.1",
        "stream": False,
        "waiting": True,
        "wait_s": None,
    }
    activity_service.report_live("web-1", 11, [row])
    activity_service.report_live("web-2", 12, [{**row, "id": "cd-1"}])
    activity_service.report_live("web-dead", 13, [{**row, "id": "ef-1"}])
    stale = timezone.now() - datetime.timedelta(seconds=activity_selectors.LIVE_STALE_S + 1)
    from models_app.models import LiveRequests

    LiveRequests.objects.filter(instance="web-dead").update(updated_at=stale)
    live = client_for("operator").get("/requests/data/").json()["live"]
    assert sorted((r["instance"], r["id"]) for r in live) == [("web-1", "ab-7"), ("web-2", "cd-1")]


def test_an_operator_cancel_goes_to_the_owning_process_and_is_audited(bus_messages) -> None:
    activity_service.report_live(
        "web-1", 11, [{"id": "ab-7", "model": "alpha", "started_at": time.time()}]
    )
    answer = client_for("operator").post(
        "/requests/cancel/", {"instance": "web-1", "request": "ab-7"}
    )
    assert answer.status_code == 200, answer.content
    message = protocol.read(bus_messages.wait(5, only=b"cancel"))  # type: ignore[attr-defined]
    assert message == protocol.CancelRequest(instance="web-1", request="ab-7")
    audited = AuditEntry.objects.values_list("actor_name", "action", "target", "result")
    assert list(audited) == [("operator", "cancel_request", "request ab-7", "ok")]


def test_a_viewer_cancel_is_refused_and_audited() -> None:
    activity_service.report_live("web-1", 11, [{"id": "ab-7", "model": "alpha"}])
    answer = client_for("viewer").post(
        "/requests/cancel/", {"instance": "web-1", "request": "ab-7"}
    )
    assert answer.status_code == 403
    audited = AuditEntry.objects.values_list("actor_name", "action", "result")
    assert list(audited) == [("viewer", "cancel_request", "refused")]


def test_only_an_admin_turns_capture_on_and_only_admins_read_the_text(
    bus_messages, django_capture_on_commit_callbacks
) -> None:
    assert client_for("operator").post("/requests/capture/", {"capture": "on"}).status_code == 403
    assert not ActivitySettings.capture_on()
    admin = client_for("admin")
    with django_capture_on_commit_callbacks(execute=True):  # the notice goes after commit
        assert admin.post("/requests/capture/", {"capture": "on"}).status_code == 302
    assert ActivitySettings.capture_on()
    message = protocol.read(bus_messages.wait(5, only=b"capture"))  # type: ignore[attr-defined]
    assert message == protocol.CaptureChanged(capture=True)
    activity_service.write_finished("web-1", [finished(prompt_text="hi", completion_text="yo")])
    assert admin.get("/requests/data/").json()["finished"][0]["prompt_text"] == "hi"
    viewer_row = client_for("viewer").get("/requests/data/").json()["finished"][0]
    assert (viewer_row["prompt_text"], viewer_row["completion_text"]) == ("", "")
    audited = AuditEntry.objects.values_list("actor_name", "action", "target", "result")
    assert set(audited) == {
        ("operator", "capture", "on", "refused"),
        ("admin", "capture", "on", "ok"),
    }
    assert admin.post("/requests/capture/", {"capture": "maybe"}).status_code == 400


def test_retention_keeps_the_newest_rows_within_the_age_limit() -> None:
    old = time.time() - 3 * 3600
    activity_service.write_finished("web-1", [finished(started_at=old)])
    activity_service.write_finished("web-1", [finished(request_id=f"ab-{n}") for n in range(5)])
    assert activity_service.prune(hours=2, max_rows=3) == 3
    assert RequestRecord.objects.count() == 3
    assert not RequestRecord.objects.filter(
        started_at__lt=timezone.now() - datetime.timedelta(hours=2)
    ).exists()


def test_the_overview_snapshot_carries_requests_and_tokens_per_second() -> None:
    activity_service.write_finished("web-1", [finished(), finished(), finished("beta")])
    rates = activity_selectors.model_rates(window_s=60)
    assert rates["alpha"] == {
        "requests_per_s": round(2 / 60, 2),
        "tokens_per_s": round(100 / 60, 1),
    }
    assert set(rates) == {"alpha", "beta"}
