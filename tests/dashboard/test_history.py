"""The swap history and the charts' data tell the truth: phases that add up to the total,
policy, actor and operation shown, the end of an error's log kept, filters that cannot
apply refused with a message, one colour per model, an empty window drawn as that window."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from dashboard.charts import MAX_SWAPS, chart_data
from models_app.models import EngineRuntime, ModelDefinition, SwapEvent

pytestmark = pytest.mark.django_db

PHASES_MS = {
    "queue_ms": 12.4,
    "backoff_ms": 0.0,
    "check_ms": 1.2,
    "cooldown_ms": 4987.0,
    "drain_ms": 2.6,
    "evict_ms": 40.3,
    "bringup_ms": 3900.1,
    "readiness_ms": 25.2,
    "settle_ms": 2.1,
}


@pytest.fixture
def admin() -> Client:
    client = Client(raise_request_exception=False)  # a 500 is an answer here, not a raise
    client.force_login(User.objects.create_superuser("admin", password="admin-pw-1"))
    return client


def swap(**fields: Any) -> SwapEvent:
    defaults: dict[str, Any] = {
        "gpu_group": "gpu0",
        "from_name": "alpha",
        "to_name": "beta",
        "trigger": "request",
        "outcome": "succeeded",
        "finished_at": timezone.now(),
    }
    return SwapEvent.objects.create(**(defaults | fields))


def row_of(page: str, pk: int) -> str:
    match = re.search(rf'<tr data-swap="{pk}".*?</tr>', page, re.S)
    assert match, f"no row for swap {pk}"
    return match.group(0)


def shown_ms(html: str) -> list[float]:
    return [float(v) for v in re.findall(r'data-ms="([0-9.]+)"', html)]


def text_of(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_a_swaps_phases_and_queue_add_up_to_its_total(admin: Client) -> None:
    # The switch's own total is longer than its phases: the writes between them are "other".
    recorded = swap(total_ms=9014.0, **PHASES_MS)
    row = row_of(admin.get("/swaps/").content.decode(), recorded.pk)
    *phases, total = shown_ms(row)
    assert total == pytest.approx(9014.0 + 12.4)  # the queue wait is part of it
    assert sum(phases) == pytest.approx(total)
    names = re.findall(r'data-phase="(\w+)"', row)
    assert names == [
        "queue",
        "backoff",
        "check",
        "cooldown",
        "drain",
        "evict",
        "bringup",
        "readiness",
        "settle",
        "other",
    ]
    assert "cooldown 4,987" in text_of(row) and "9,026" in text_of(row)


def test_a_swap_recorded_before_the_new_columns_still_adds_up(admin: Client) -> None:
    old = swap(drain_ms=3.0, evict_ms=40.0, bringup_ms=900.0, readiness_ms=25.0, total_ms=9014.0)
    *phases, total = shown_ms(row_of(admin.get("/swaps/").content.decode(), old.pk))
    assert total == 9014.0 and sum(phases) == pytest.approx(total)


def test_a_row_shows_policy_actor_and_operation(admin: Client) -> None:
    switched = swap(
        trigger="dashboard",
        actor="operator-ann",
        eviction_weights="offload",
        eviction_process="keep_running",
        bringup="wake",
        total_ms=50.0,
    )
    evicted = swap(
        to_name="",
        operation="evict",
        trigger="api",
        actor="ops-bot",
        eviction_weights="discard",
        eviction_process="checkpoint",
        escalated=True,
        total_ms=80.0,
    )
    page = admin.get("/swaps/").content.decode()
    row = text_of(row_of(page, switched.pk))
    assert "Make active" in row and "Dashboard" in row and "operator-ann" in row
    assert "evict alpha: offload · keep running" in row and "bring up beta: wake" in row
    row = text_of(row_of(page, evicted.pk))
    assert "Evict" in row and "ops-bot" in row and "Management API" in row
    assert "evict alpha: discard · checkpoint, escalated to stop" in row


def test_an_error_keeps_its_message_and_the_end_of_the_log(admin: Client) -> None:
    log = "\n".join(f"INFO line {i} of the engine's log" for i in range(400))
    failed = swap(
        outcome="failed",
        total_ms=1200.0,
        error=f"cold start of beta failed: exited with 1; the engine's log says:\n{log}\n"
        "ValueError: the KV cache does not fit",
    )
    page = admin.get("/swaps/").content.decode()
    detail = re.search(rf'<tr class="detail" data-swap-error="{failed.pk}">.*?</tr>', page, re.S)
    assert detail
    shown = unescape(detail.group(0))
    assert "<details>" in shown and "cold start of beta failed" in shown
    assert "ValueError: the KV cache does not fit" in shown and "line 399 of" in shown
    assert "characters …" in shown  # the middle is left out, and says so


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("outcme=failed", "outcme: not a parameter here"),
        ("outcome=failed&outcome=succeeded", "outcome: given more than once"),
        ("since=2026-02-01T10:00&until=2026-01-01T10:00", "until: must be later than since"),
        ("page=7", "page: expected a whole number from 1 to 1"),
        ("page=last", "page: expected a whole number"),
        ("outcome=sideways", "outcome: expected one of"),
    ],
)
def test_a_filter_that_cannot_apply_is_a_400_with_the_form_and_a_message(
    admin: Client, query: str, says: str
) -> None:
    response = admin.get(f"/swaps/?{query}")
    page = response.content.decode()
    assert response.status_code == 400
    assert says in unescape(page) and 'role="alert"' in page and '<form method="get"' in page
    assert admin.get(f"/swaps/rows/?{query}").status_code == 400


def test_the_live_rows_are_the_pages_own_count_and_table(admin: Client) -> None:
    for name in ("alpha", "beta", "alpha"):
        swap(to_name=name, from_name="", total_ms=10.0)
    rows = admin.get("/swaps/rows/?model=alpha").content.decode()
    assert "2 swaps" in rows and rows.count("<tr data-swap=") == 2 and "<form" not in rows
    page = admin.get("/swaps/?model=alpha").content.decode()
    assert 'data-url="/swaps/rows/?model=alpha"' in page


def test_an_empty_window_is_that_window_with_nothing_in_it() -> None:
    data = chart_data(6)
    assert data["timeline"] == data["latency"] == [] and data["memory"] == {}
    since, until = (timezone.datetime.fromisoformat(data[k]) for k in ("since", "until"))
    assert until - since == timedelta(hours=6) and data["drawn_from"] == data["since"]


def test_the_holder_before_the_window_is_drawn_from_its_start() -> None:
    alpha = ModelDefinition.objects.create(name="alpha", model_path="sim/alpha", port=18001)
    EngineRuntime.objects.create(model=alpha, state="stopped", gpu_group="gpu0")
    held = swap(to_name="alpha", from_name="", total_ms=10.0)
    SwapEvent.objects.filter(pk=held.pk).update(started_at=timezone.now() - timedelta(hours=3))
    data = chart_data(1)
    assert data["timeline"] == [
        {"model": "alpha", "group": ["gpu0"], "start": [data["since"]], "end": [data["until"]]}
    ]


def test_each_model_has_one_colour_in_every_chart() -> None:
    for name in ("alpha", "beta", "gamma"):
        ModelDefinition.objects.create(name=name, model_path=f"sim/{name}", port=18000 + len(name))
    swap(from_name="", to_name="alpha", bringup="cold_start", total_ms=900.0)
    swap(to_name="beta", bringup="wake", total_ms=90.0, gpu_memory_after={"0": 1 << 30})
    swap(from_name="beta", to_name="alpha", bringup="wake", total_ms=80.0)
    data = chart_data(1)
    assert data["colours"] == {"alpha": "#1f77b4", "beta": "#ff7f0e", "gamma": "#2ca02c"}
    assert [(e["model"], e["label"]) for e in data["latency"]] == [
        ("alpha", "alpha · cold start"),
        ("alpha", "alpha · wake"),
        ("beta", "beta · wake"),
    ]
    (gpu0,) = data["memory"].values()
    assert (gpu0["used"], gpu0["model"]) == ([1 << 30], ["beta"])


def test_past_the_cap_the_charts_begin_at_the_oldest_swap_drawn() -> None:
    now = timezone.now()
    SwapEvent.objects.bulk_create(
        SwapEvent(
            gpu_group="gpu0",
            to_name="alpha" if i % 2 else "beta",
            trigger="request",
            outcome="succeeded",
            total_ms=5.0,
            finished_at=now,
        )
        for i in range(MAX_SWAPS + 10)
    )
    data = chart_data(1)
    assert data["swaps"] == MAX_SWAPS + 10 and data["drawn"] == MAX_SWAPS
    assert data["drawn_from"] >= data["since"]


@pytest.mark.parametrize("query", ["hours=0", "hours=soon", "hours=1&hours=6", "window=6"])
def test_a_window_that_cannot_apply_is_a_400_on_the_page_and_its_data(
    admin: Client, query: str
) -> None:
    page = admin.get(f"/charts/?{query}")
    assert page.status_code == 400 and 'role="alert"' in page.content.decode()
    data = admin.get(f"/charts/data/?{query}")
    assert data.status_code == 400 and data.json()["error"]


def test_a_window_a_link_names_is_offered_in_the_form(admin: Client) -> None:
    page = admin.get("/charts/?hours=2.5").content.decode()
    assert '<option value="2.5" selected>2.5 hours</option>' in page
