"""The management API: every role against every endpoint, allowed and refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from checkpoints_app.models import CheckpointImage, ImageStatus
from models_app.models import AuditEntry, ModelDefinition, SwitchRequest
from models_app.services import api_tokens

pytestmark = pytest.mark.django_db

READS = [
    "/api/status/",
    "/api/models/",
    "/api/models/alpha/",
    "/api/swaps/",
    "/api/images/",
    "/api/nodes/",
    "/api/validations/",
]
NEW = {
    "name": "gamma",
    "definition": {"engine": "simulator", "model_path": "sim/gamma", "port": 18003},
}
# (method, path, body, status for an operator or admin)
WRITES: list[tuple[str, str, dict[str, Any] | None, int]] = [
    ("post", "/api/models/", NEW, 201),
    ("patch", "/api/models/alpha/", {"definition": {"extra_args": ["--enforce-eager"]}}, 200),
    ("post", "/api/models/alpha/actions/switch/", None, 202),
    ("post", "/api/models/beta/actions/evict/", {"weights": "offload", "process": "stop"}, 202),
    ("put", "/api/models/beta/override/", {"weights": "discard", "process": "stop"}, 200),
    ("post", "/api/mode/", {"mode": "manual"}, 200),
    ("post", "/api/unpin/", None, 200),
    ("delete", "/api/images/1/", None, 200),
    ("delete", "/api/models/beta/", None, 204),
]


@pytest.fixture
def registry() -> None:
    for name, port in (("alpha", 18001), ("beta", 18002)):
        ModelDefinition.objects.create(name=name, model_path=f"sim/{name}", port=port)
    CheckpointImage.objects.create(
        pk=1, model_name="beta", location="/nonexistent/x", status=ImageStatus.CORRUPT
    )


def client(role: str | None, *, token: bool = False) -> APIClient:
    api = APIClient()
    if role is None:
        return api
    user = User.objects.create_user(role, password=f"{role}-pw-123", is_superuser=role == "admin")
    if role in ("operator", "viewer"):
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    if token:
        token = api_tokens.create_token(user).plaintext  # hashed in the database
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    else:
        api.force_authenticate(user)
    return api


def call(api: APIClient, method: str, path: str, body: dict[str, Any] | None) -> Any:
    return getattr(api, method)(path, body, format="json")


@pytest.mark.parametrize("token", [False, True], ids=["session", "token"])
@pytest.mark.parametrize("role", ["admin", "operator", "viewer"])
def test_every_role_reads_everything_but_the_audit_and_the_keys(
    role: str, token: bool, registry: None
) -> None:
    api = client(role, token=token)  # a token acts with its user's role
    for path in READS:
        assert api.get(path).status_code == 200, path
    for path in ("/api/audit/", "/api/keys/"):
        assert api.get(path).status_code == (200 if role == "admin" else 403), path


def test_anonymous_gets_nothing(registry: None) -> None:
    api = client(None)
    for path in [*READS, "/api/audit/"]:
        response = api.get(path)
        assert response.status_code == 401, path  # no credentials: 401, as docs/API.md says
        assert response["WWW-Authenticate"] == "Token", path
    for method, path, body, _ in WRITES:
        assert call(api, method, path, body).status_code == 401, path
    assert SwitchRequest.objects.count() == 0


@pytest.mark.parametrize("role", ["admin", "operator"])
def test_operators_and_admins_may_write(role: str, registry: None) -> None:
    api = client(role, token=True)  # automation authenticates with a token
    for method, path, body, expected in WRITES:
        response = call(api, method, path, body)
        assert response.status_code == expected, (path, response.content)
    assert ModelDefinition.objects.filter(name="gamma").exists()
    assert not ModelDefinition.objects.filter(name="beta").exists()
    assert AuditEntry.objects.filter(actor_name=role, source="api").count() == len(WRITES)


def test_a_viewer_is_refused_every_write_and_nothing_changes(registry: None) -> None:
    api = client("viewer")
    for method, path, body, _ in WRITES:
        assert call(api, method, path, body).status_code == 403, path
    assert SwitchRequest.objects.count() == 0
    assert not ModelDefinition.objects.filter(name="gamma").exists()
    assert ModelDefinition.objects.filter(name="beta").exists()


def test_an_action_answers_with_the_operation_to_follow(registry: None) -> None:
    api = client("operator")
    accepted = api.post("/api/models/alpha/actions/switch/", format="json")
    assert accepted.status_code == 202
    operation = api.get(accepted.json()["url"]).json()
    assert (operation["model"], operation["kind"], operation["status"]) == (
        "alpha",
        "switch",
        "pending",
    )


def test_an_action_on_a_busy_gpu_group_is_a_conflict(registry: None) -> None:
    api = client("operator")
    api.post("/api/models/alpha/actions/switch/", format="json")
    SwitchRequest.objects.update(status="running")  # a worker is carrying it out
    busy = api.post("/api/models/beta/actions/switch/", format="json")
    assert busy.status_code == 409 and "is running on GPU group" in busy.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/models/", {"name": "x", "definition": {"model_path": "m", "port": "no"}}, "port"),
        ("/api/models/", {"name": "x", "definition": {}, "colour": "red"}, "colour"),
        (
            "/api/models/alpha/actions/evict/",
            {"weights": "retain", "process": "keep_running"},
            "frees no GPU memory",
        ),
        ("/api/models/alpha/actions/evict/", {"weights": "melt", "process": "stop"}, "weights"),
        ("/api/mode/", {"mode": "sometimes"}, "mode"),
    ],
)
def test_bad_input_is_a_clear_400_and_changes_nothing(
    path: str, body: dict[str, Any], field: str, registry: None
) -> None:
    response = client("admin").post(path, body, format="json")
    assert response.status_code == 400 and field in response.content.decode(), response.content
    assert SwitchRequest.objects.count() == 0
    assert not ModelDefinition.objects.filter(name="x").exists()


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_only_admins_manage_gateway_keys(role: str, registry: None) -> None:
    api = client(role)
    assert api.get("/api/keys/").status_code == 403
    assert api.post("/api/keys/", {"name": "k"}, format="json").status_code == 403


def test_a_key_is_shown_once_and_stored_hashed(registry: None) -> None:
    api = client("admin")
    created = api.post(
        "/api/keys/", {"name": "ci", "scopes": ["alpha"], "rpm_limit": 60}, format="json"
    )
    assert created.status_code == 201
    body = created.json()
    plaintext = body["key"]
    assert plaintext.startswith(f"llmux-{body['prefix']}-")
    listed = api.get("/api/keys/").json()
    assert plaintext not in json.dumps(listed) and "secret_hash" not in json.dumps(listed)
    from models_app.models import ApiKey

    stored = ApiKey.objects.get()
    assert plaintext.split("-", 2)[2] not in stored.secret_hash  # only its hash
    assert api.delete(f"/api/keys/{body['id']}/").status_code == 204
    assert ApiKey.objects.get().revoked


@pytest.mark.parametrize("depth", [100, 20_000])
def test_deeply_nested_json_is_a_400(depth: int, registry: None) -> None:
    body = '{"mode": ' + "[" * depth + "]" * depth + "}"
    response = client("admin").generic("POST", "/api/mode/", body, content_type="application/json")
    assert response.status_code == 400 and "nested deeper" in response.json()["detail"]


# Every write endpoint, as a refusal records it: (method, path, audited action, target).
REFUSED_WRITES = [
    ("post", "/api/models/", "create_model", ""),
    ("patch", "/api/models/alpha/", "edit", "alpha"),
    ("post", "/api/models/alpha/actions/switch/", "switch", "alpha"),
    ("put", "/api/models/beta/override/", "override", "beta"),
    ("post", "/api/mode/", "mode", ""),
    ("post", "/api/unpin/", "unpin", ""),
    ("delete", "/api/images/1/", "delete_image", "1"),
    ("post", "/api/images/1/restore/", "restore", "1"),
    ("delete", "/api/models/beta/", "delete_model", "beta"),
    ("post", "/api/keys/", "create_key", ""),
    ("delete", "/api/keys/7/", "revoke_key", "7"),
]


@pytest.mark.parametrize("role", [None, "viewer"])
def test_every_refused_write_is_audited_as_refused_from_the_api(
    role: str | None, registry: None
) -> None:
    api = client(role)
    for method, path, _, _ in REFUSED_WRITES:
        assert getattr(api, method)(path, {}, format="json").status_code in (401, 403), path
    entries = list(
        AuditEntry.objects.order_by("id").values_list(
            "actor_name", "action", "target", "source", "result"
        )
    )
    assert entries == [
        (role or "", action, target, "api", "refused") for _, _, action, target in REFUSED_WRITES
    ]
    assert api.get("/api/status/").status_code in (200, 401, 403)  # reads are not audited
    assert AuditEntry.objects.count() == len(REFUSED_WRITES)


def test_an_operators_refused_key_write_and_a_bad_token_are_audited(registry: None) -> None:
    assert client("operator").post("/api/keys/", {"name": "k"}, format="json").status_code == 403
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert forged.post("/api/mode/", {"mode": "manual"}, format="json").status_code in (401, 403)
    entries = list(AuditEntry.objects.order_by("id").values_list("actor_name", "action", "result"))
    assert entries == [("operator", "create_key", "refused"), ("", "mode", "refused")]


def test_operations_started_through_the_api_carry_the_api_trigger(registry: None) -> None:
    api = client("operator")
    assert api.post("/api/models/alpha/actions/switch/", format="json").status_code == 202
    body = {"weights": "offload", "process": "stop"}
    assert api.post("/api/models/beta/actions/evict/", body, format="json").status_code == 202
    assert set(SwitchRequest.objects.values_list("trigger", flat=True)) == {"api"}
