"""Malformed input to the management API is a 400 naming the field, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from models_app.models import ApiKey

pytestmark = pytest.mark.django_db

HUGE = 10**24  # more than any integer column holds


@pytest.fixture
def admin() -> APIClient:
    api = APIClient(raise_request_exception=False)  # a 500 is an answer here, not a raise
    api.force_authenticate(User.objects.create_superuser("admin", password="admin-pw-1"))
    return api


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "k", "rpm_limit": HUGE}, "rpm_limit"),
        ({"name": "k", "rpm_limit": 2**31}, "rpm_limit"),
        ({"name": "k", "expires_at": "9999-12-31T23:59:59-23:00"}, "expires_at"),
    ],
)
def test_it_rejects_a_key_out_of_the_columns_range(
    admin: APIClient, body: dict[str, Any], field: str
) -> None:
    response = admin.post("/api/keys/", body, format="json")
    assert response.status_code == 400 and field in response.json(), response.content
    assert ApiKey.objects.count() == 0


def test_the_largest_limit_a_column_holds_is_accepted(admin: APIClient) -> None:
    response = admin.post("/api/keys/", {"name": "k", "rpm_limit": 2**31 - 1}, format="json")
    assert response.status_code == 201 and ApiKey.objects.get().rpm_limit == 2**31 - 1


@pytest.mark.parametrize(
    "path",
    [
        "/api/swaps/?model=a%00b",
        "/api/swaps/?outcome=sideways",
        "/api/swaps/?trigger=whim",
        "/api/validations/?model=a%00b",
    ],
)
def test_it_rejects_a_malformed_filter(admin: APIClient, path: str) -> None:
    response = admin.get(path)
    assert response.status_code == 400, response.content


def test_it_rejects_a_nul_byte_in_a_path_with_a_json_400(admin: APIClient) -> None:
    response = admin.get("/api/models/a%00b/")
    assert response.status_code == 400 and "NUL" in response.json()["detail"]
