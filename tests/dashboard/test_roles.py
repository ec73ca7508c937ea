"""The dashboard: every URL, every role, GET and POST, each with its expected status.

The REST API's matrix is tests/api/test_roles.py; this one covers dashboard/urls.py.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import URLPattern

from dashboard import urls
from models_app.models import AuditEntry, ModelDefinition, SwitchRequest
from models_app.roles import OPERATOR_GROUP
from models_app.services.engines import engine_log_path

pytestmark = pytest.mark.django_db

ROLES = [None, "viewer", "operator", "admin"]
LOGIN = 302  # anonymous: sent to /login/
READ = [LOGIN, LOGIN, 200, 405, 200, 405, 200, 405]  # a page every role reads, GET only
ADMIN_READ = [LOGIN, LOGIN, 403, 405, 403, 405, 200, 405]
# URL name -> (path, POST body, statuses: anonymous GET, POST, viewer GET, POST, operator
# GET, POST, admin GET, POST)
MATRIX: dict[str, tuple[str, dict[str, str], list[int]]] = {
    "overview": ("/", {}, READ),
    "model-detail": ("/models/alpha/", {}, READ),
    "engine-log": ("/models/alpha/log/", {}, [LOGIN, LOGIN, 200, 405, 200, 405, 200, 405]),
    "swaps": ("/swaps/", {}, READ),
    "swaps-rows": ("/swaps/rows/", {}, READ),
    "checkpoints": ("/checkpoints/", {}, READ),
    "audit": ("/audit/", {}, ADMIN_READ),
    "charts": ("/charts/", {}, READ),
    "charts-data": ("/charts/data/", {}, READ),
    "playground": ("/playground/", {}, READ),
    # A created key redirects to the page that shows it once (post, redirect, get).
    "keys": ("/keys/", {"name": "k"}, [LOGIN, LOGIN, 403, 403, 403, 403, 200, 302]),
    "playground-key": ("/playground/key/", {}, [LOGIN, LOGIN, 405, 403, 405, 200, 405, 200]),
    "act": (
        "/actions/switch/",
        {"model": "alpha", "next": "/"},
        [LOGIN, LOGIN, 405, 403, 405, 302, 405, 302],
    ),
    "requests": ("/requests/", {}, READ),
    "requests-data": ("/requests/data/", {}, READ),
    # Nothing is in flight here: an operator's cancel is allowed, and answers 409.
    "requests-cancel": (
        "/requests/cancel/",
        {"instance": "web-1", "request": "1a-1"},
        [LOGIN, LOGIN, 405, 403, 405, 409, 405, 409],
    ),
    "requests-capture": (
        "/requests/capture/",
        {"capture": "on"},
        [LOGIN, LOGIN, 405, 403, 405, 403, 405, 302],
    ),
}


@pytest.fixture
def registry() -> None:
    alpha = ModelDefinition.objects.create(name="alpha", model_path="sim/alpha", port=18001)
    engine_log_path(alpha).write_text("an engine line\n")  # its log, to download


def client_for(role: str | None) -> Client:
    client = Client()
    if role is not None:
        user = User.objects.create_user(role, password=f"{role}-pw-1", is_superuser=role == "admin")
        if role == "operator":
            user.groups.add(Group.objects.get_or_create(name=OPERATOR_GROUP)[0])
        client.force_login(user)
    return client


def test_the_matrix_covers_every_dashboard_url() -> None:
    names = {p.name for p in urls.urlpatterns if isinstance(p, URLPattern)}
    assert names == set(MATRIX)


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "anonymous")
@pytest.mark.parametrize("name", sorted(MATRIX))
def test_every_dashboard_url_answers_each_role_as_expected(
    name: str, role: str | None, registry: None
) -> None:
    path, body, statuses = MATRIX[name]
    column = ROLES.index(role) * 2
    client = client_for(role)
    got = client.get(path)
    assert got.status_code == statuses[column], ("GET", got.status_code)
    if statuses[column] == LOGIN:
        assert got["Location"].startswith("/login/")
    posted = client.post(path, body)
    assert posted.status_code == statuses[column + 1], ("POST", posted.status_code)


def test_a_refused_dashboard_action_changes_nothing_and_is_audited(registry: None) -> None:
    assert client_for("viewer").post("/actions/switch/", {"model": "alpha"}).status_code == 403
    assert client_for(None).post("/actions/switch/", {"model": "alpha"}).status_code == LOGIN
    assert SwitchRequest.objects.count() == 0
    refused = AuditEntry.objects.values_list("actor_name", "action", "source", "result")
    assert list(refused) == [("viewer", "switch", "dashboard", "refused")]
