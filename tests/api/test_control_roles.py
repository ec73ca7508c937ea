"""llmux's control routes: every role against every route and method, as the management
API checks them (any role reads, operators and administrators act, viewers are refused
and audited, no credentials is 401)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from models_app.models import AuditEntry, ModelDefinition, RegistryConfig, SwitchRequest
from models_app.services import api_tokens

pytestmark = pytest.mark.django_db

READS = ["status", "sleep-levels", "eviction"]
# (route, body, status for an operator or admin). No worker runs here: a route that waits
# for its operation answers 504 after the registry's request timeout (1 s below), with the
# operation queued in the caller's name.
WRITES: list[tuple[str, dict[str, Any] | None, int]] = [
    ("mode", {"mode": "manual"}, 200),
    ("unpin", None, 200),
    ("sleep-level", {"model": "beta", "level": 3}, 200),
    ("eviction", {"model": "beta", "eviction": {"weights": "discard", "process": "stop"}}, 200),
    ("switch", {"model": "alpha"}, 504),
    ("pin", {"model": "alpha"}, 504),
    ("wake", {"model": "beta"}, 504),
    ("sleep", {"model": "alpha", "level": 1}, 504),
]
ROLES = ["admin", "operator", "viewer"]


@pytest.fixture(autouse=True)
def registry() -> None:
    for name, port in (("alpha", 18001), ("beta", 18002)):
        ModelDefinition.objects.create(name=name, model_path=f"sim/{name}", port=port)
    RegistryConfig.objects.update_or_create(pk=1, defaults={"request_timeout_secs": 1})


def caller(role: str | None) -> Client:
    client = Client(HTTP_HOST="127.0.0.1")
    if role is None:
        return client
    user = User.objects.create_user(role, is_superuser=role == "admin")
    if role != "admin":
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    key = api_tokens.create_token(user).plaintext
    return Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Token {key}")


def post(client: Client, route: str, body: dict[str, Any] | None) -> Any:
    return client.post(
        f"/control/{route}", json.dumps(body) if body else "", content_type="application/json"
    )


@pytest.mark.parametrize("route", READS)
@pytest.mark.parametrize("role", ROLES)
def test_every_role_reads(role: str, route: str) -> None:
    answer = caller(role).get(f"/control/{route}")
    assert answer.status_code == 200
    assert set(answer.json()) >= {"models"}


@pytest.mark.parametrize("route", READS)
def test_reading_needs_credentials(route: str) -> None:
    answer = caller(None).get(f"/control/{route}")
    assert answer.status_code == 401 and answer["WWW-Authenticate"] == "Token"
    assert "error" in answer.json()


@pytest.mark.parametrize(("route", "body", "allowed"), WRITES, ids=[w[0] for w in WRITES])
@pytest.mark.parametrize("role", ["admin", "operator"])
def test_operators_and_admins_act(
    role: str, route: str, body: dict[str, Any] | None, allowed: int
) -> None:
    answer = post(caller(role), route, body)
    assert answer.status_code == allowed, answer.content
    if allowed == 504:  # queued in the caller's name, and still there to follow
        assert SwitchRequest.objects.get().actor == role
        assert "did not finish in time" in answer.json()["error"]
    assert AuditEntry.objects.filter(actor_name=role, result__in=["ok", "queued"]).count() == 1


@pytest.mark.parametrize(("route", "body", "allowed"), WRITES, ids=[w[0] for w in WRITES])
def test_viewers_are_refused_and_audited(
    route: str, body: dict[str, Any] | None, allowed: int
) -> None:
    answer = post(caller("viewer"), route, body)
    assert answer.status_code == 403
    assert answer.json() == {"error": "viewers cannot change anything"}
    assert not SwitchRequest.objects.exists()
    refusal = AuditEntry.objects.get()
    assert (refusal.actor_name, refusal.result, refusal.source) == ("viewer", "refused", "api")


@pytest.mark.parametrize(("route", "body", "allowed"), WRITES, ids=[w[0] for w in WRITES])
def test_acting_needs_credentials(route: str, body: dict[str, Any] | None, allowed: int) -> None:
    assert post(caller(None), route, body).status_code == 401
    assert not SwitchRequest.objects.exists() and not AuditEntry.objects.exists()


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_other_methods_are_refused(method: str) -> None:
    answer = getattr(caller("admin"), method)("/control/switch")
    assert answer.status_code == 405 and "error" in answer.json()
