"""Dashboard pages and actions through Django's test client: roles, audit, validation."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from checkpoints_app.models import CheckpointImage, ImageStatus
from models_app.models import AuditEntry, ModelDefinition, SwapEvent, SwitchRequest
from models_app.roles import OPERATOR_GROUP

pytestmark = pytest.mark.django_db

PAGES = ["/", "/models/alpha/", "/swaps/", "/checkpoints/", "/playground/", "/charts/"]


@pytest.fixture
def models() -> list[ModelDefinition]:
    return [
        ModelDefinition.objects.create(name=name, model_path=f"sim/{name}", port=port)
        for name, port in (("alpha", 18001), ("beta", 18002))
    ]


def client_for(role: str) -> Client:
    user = User.objects.create_user(role, password="pw-" + role, is_superuser=role == "admin")
    if role == "operator":
        user.groups.add(Group.objects.get_or_create(name=OPERATOR_GROUP)[0])
    client = Client()
    client.force_login(user)
    return client


def test_every_page_needs_a_login(models: list[ModelDefinition]) -> None:
    for page in [*PAGES, "/audit/"]:
        response = Client().get(page)
        assert response.status_code == 302 and response["Location"].startswith("/login/")


@pytest.mark.parametrize("role", ["admin", "operator", "viewer"])
def test_every_page_renders_for_every_role(role: str, models: list[ModelDefinition]) -> None:
    client = client_for(role)
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 200, page
        body = response.content.decode()
        has_controls = 'data-action="' in body
        assert has_controls == (role != "viewer" and page in ("/", "/models/alpha/")), page


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_only_admins_read_the_audit_log(role: str, models: list[ModelDefinition]) -> None:
    AuditEntry.objects.create(actor_name="someone", action="create_key", remote_addr="10.9.8.7")
    client = client_for(role)
    refused = client.get("/audit/")
    assert refused.status_code == 403 and b"10.9.8.7" not in refused.content
    assert 'href="/audit/"' not in client.get("/").content.decode()  # no link to it either
    admin = client_for("admin")
    assert b"10.9.8.7" in admin.get("/audit/").content
    assert 'href="/audit/"' in admin.get("/").content.decode()


def test_a_viewers_forged_action_is_refused_and_audited(models: list[ModelDefinition]) -> None:
    viewer = client_for("viewer")
    response = viewer.post("/actions/switch/", {"model": "alpha"})
    assert response.status_code == 403
    assert SwitchRequest.objects.count() == 0
    entry = AuditEntry.objects.get()
    assert (entry.actor_name, entry.action, entry.target, entry.result) == (
        "viewer",
        "switch",
        "alpha",
        "refused",
    )


def test_an_operators_actions_are_queued_and_audited(models: list[ModelDefinition]) -> None:
    operator = client_for("operator")
    for action, data in [
        ("switch", {"model": "alpha"}),
        ("evict", {"model": "beta", "weights": "offload", "process": "stop"}),
        ("mode", {"mode": "manual"}),
    ]:
        response = operator.post(f"/actions/{action}/", {**data, "next": "/"})
        assert response.status_code == 302 and response["Location"] == "/"
    requests = list(SwitchRequest.objects.order_by("id").values_list("kind", "target__name"))
    assert requests == [("switch", "alpha"), ("evict", "beta")]
    results = list(AuditEntry.objects.order_by("id").values_list("action", "result"))
    assert results == [("switch", "queued"), ("evict", "queued"), ("mode", "ok")]


def test_bad_input_is_refused_with_a_message_and_nothing_changes(
    models: list[ModelDefinition],
) -> None:
    admin = client_for("admin")
    response = admin.post(
        "/actions/evict/",
        {"model": "alpha", "weights": "retain", "process": "keep_running"},
        follow=True,
    )
    assert "frees no GPU memory" in response.content.decode()
    response = admin.post("/actions/switch/", {"model": "nope"}, follow=True)
    assert "no model named" in response.content.decode()
    assert SwitchRequest.objects.count() == 0
    assert list(AuditEntry.objects.values_list("result", flat=True)) == ["failed", "failed"]


def test_a_definition_is_edited_with_the_imports_validation(
    models: list[ModelDefinition],
) -> None:
    admin = client_for("admin")
    page = admin.get("/models/alpha/").content.decode()
    assert "sim/alpha" in page
    edited = {"model_path": "sim/alpha-2", "port": 18001, "extra_args": ["--x"]}
    admin.post("/actions/edit/", {"model": "alpha", "definition": json.dumps(edited)})
    assert ModelDefinition.objects.get(name="alpha").model_path == "sim/alpha-2"
    bad = {"model_path": "sim/alpha", "port": "eighty"}
    response = admin.post(
        "/actions/edit/", {"model": "alpha", "definition": json.dumps(bad)}, follow=True
    )
    assert "port" in response.content.decode()
    assert ModelDefinition.objects.get(name="alpha").model_path == "sim/alpha-2"  # unchanged


def test_history_filters_and_pages(models: list[ModelDefinition]) -> None:
    for i in range(120):
        SwapEvent.objects.create(
            gpu_group="g",
            to_name="alpha" if i % 2 else "beta",
            trigger="request",
            outcome="succeeded" if i % 3 else "failed",
            finished_at="2026-11-29T10:00:00Z",
        )
    admin = client_for("admin")
    page = admin.get("/swaps/?model=alpha&outcome=failed").content.decode()
    assert "20 swaps" in page  # odd i (alpha) divisible by 3: 20 of 120
    assert "Older" not in page
    assert "Older" in admin.get("/swaps/").content.decode()


def test_deleting_an_image_from_the_page(models: list[ModelDefinition], tmp_path: object) -> None:
    image = CheckpointImage.objects.create(
        model_name="alpha", location="/nonexistent/llmux-image", status=ImageStatus.CORRUPT
    )
    client_for("operator").post("/actions/delete_image/", {"image": str(image.pk)})
    image.refresh_from_db()
    assert image.status == ImageStatus.DELETED


def test_an_image_being_restored_cannot_be_deleted(models: list[ModelDefinition]) -> None:
    image = CheckpointImage.objects.create(
        model_name="alpha", location="/nonexistent/llmux-restoring", status=ImageStatus.RESTORING
    )
    operator = client_for("operator")
    page = operator.get("/checkpoints/").content.decode()
    assert "image-restoring" in page and 'data-action="delete_image"' not in page
    response = operator.post("/actions/delete_image/", {"image": str(image.pk)}, follow=True)
    assert "is restoring" in response.content.decode()
    image.refresh_from_db()
    assert image.status == ImageStatus.RESTORING


def test_an_admin_creates_a_key_on_the_page_and_sees_it_once(
    models: list[ModelDefinition],
) -> None:
    from models_app.models import ApiKey

    admin = client_for("admin")
    page = admin.post("/keys/", {"name": "ci", "scopes": "alpha, beta", "rpm": "30"})
    assert page.status_code == 302  # post, redirect, get: a reload makes no second key
    body = admin.get(page["Location"]).content.decode()
    key = ApiKey.objects.get()
    assert f"llmux-{key.prefix}-" in body and key.scopes == ["alpha", "beta"]
    assert f"llmux-{key.prefix}-" not in admin.get("/keys/").content.decode().replace(
        f"llmux-{key.prefix}-…", ""
    )  # never shown again
    admin.post("/keys/", {"revoke": str(key.pk)})
    key.refresh_from_db()
    assert key.revoked
    for role in ("operator", "viewer"):
        assert client_for(role).get("/keys/").status_code == 403


def test_a_key_scope_that_names_no_model_is_refused_and_the_form_kept(
    models: list[ModelDefinition],
) -> None:
    from models_app.models import ApiKey, AuditEntry

    admin = client_for("admin")
    page = admin.post("/keys/", {"name": "ci", "scopes": "alpha, alpah", "rpm": "30"})
    assert page.status_code == 400
    body = page.content.decode()
    assert "no model or alias is named &#x27;alpah&#x27;" in body
    assert 'value="alpha, alpah"' in body and 'value="ci"' in body  # nothing typed is lost
    assert not ApiKey.objects.exists()
    assert AuditEntry.objects.get().result == "failed"
