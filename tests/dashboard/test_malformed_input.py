"""Malformed parameters on the dashboard are a 400 with a clear message, never a 500."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from models_app.models import ApiKey, AuditEntry, SwapEvent

pytestmark = pytest.mark.django_db

HUGE = "1" + "0" * 24  # more than any integer column holds


@pytest.fixture
def admin() -> Client:
    client = Client(raise_request_exception=False)  # a 500 is an answer here, not a raise
    client.force_login(User.objects.create_superuser("admin", password="admin-pw-1"))
    return client


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/charts/data/?hours=nan", "hours"),
        ("/charts/data/?hours=inf", "hours"),
        ("/charts/data/?hours=soon", "hours"),
        ("/charts/data/?hours=0", "hours"),
        ("/swaps/?since=2024-13-45T10:00:00", "since"),
        ("/swaps/?until=2024-02-30T10:00", "until"),
        ("/swaps/?since=yesterday", "since"),
        ("/swaps/?outcome=sideways", "outcome"),
        ("/swaps/?trigger=whim", "trigger"),
    ],
)
def test_it_rejects_a_malformed_query_with_a_400(admin: Client, path: str, says: str) -> None:
    response = admin.get(path)
    assert response.status_code == 400 and says in response.content.decode(), response.content


def test_it_still_filters_with_well_formed_queries(admin: Client) -> None:
    SwapEvent.objects.create(
        gpu_group="g",
        to_name="alpha",
        trigger="request",
        outcome="succeeded",
        finished_at="2026-11-29T10:00:00Z",
    )
    assert admin.get("/charts/data/?hours=1.5").status_code == 200
    page = admin.get("/swaps/?since=2020-01-01T10:00&outcome=succeeded&trigger=request")
    assert page.status_code == 200 and "1 swaps" in page.content.decode()


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ({"name": "k", "days": "1e308"}, "days"),
        ({"name": "k", "days": "nan"}, "days"),
        ({"name": "k", "days": "inf"}, "days"),
        ({"name": "k", "rpm": HUGE}, "rpm"),
        ({"name": "k", "rpm": "0"}, "rpm"),
        ({"name": "", "rpm": "5"}, "name"),
        ({"name": "k" * 129}, "name"),
        ({"revoke": "abc"}, "revoke"),
    ],
)
def test_it_rejects_a_malformed_key_form_with_a_400(
    admin: Client, form: dict[str, str], says: str
) -> None:
    response = admin.post("/keys/", form)
    assert response.status_code == 400 and says in response.content.decode(), response.content
    assert ApiKey.objects.count() == 0


@pytest.mark.parametrize(
    ("method", "path", "form"),
    [
        ("get", "/models/a%00b/", None),
        ("get", "/swaps/?model=a%00b", None),
        ("post", "/actions/switch/", {"model": "a\x00b"}),
        ("post", "/actions/evict/", {"model": "alpha", "weights": "\x00", "process": "stop"}),
    ],
)
def test_it_rejects_a_nul_byte_anywhere_with_a_400(
    admin: Client, method: str, path: str, form: dict[str, str] | None
) -> None:
    """PostgreSQL refuses NUL in any string, so a lookup with one was a 500 there."""
    response = admin.get(path) if method == "get" else admin.post(path, form)
    assert response.status_code == 400 and b"NUL" in response.content, response.content
    assert not AuditEntry.objects.exists()  # refused before any view ran
