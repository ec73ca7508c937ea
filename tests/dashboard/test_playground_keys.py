"""The playground's key minting (POST /playground/key/): every role and method, CSRF, the
key's scope, lifetime and audit, and what the key can never do."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from llmux_site.gateway.errors import GatewayError
from llmux_site.gateway.keys import KeyTable, hash_secret, may_use, split_key
from models_app.adapters.gateway.key_table import key_records
from models_app.models import ApiKey, AuditEntry, KeyKind, ModelAlias, ModelDefinition
from models_app.roles import OPERATOR_GROUP
from models_app.services import api_keys, playground_keys, sweeper

pytestmark = pytest.mark.django_db

URL = "/playground/key/"
ROLES = [None, "viewer", "operator", "admin"]
METHODS = ["get", "head", "post", "put", "patch", "delete", "options"]
LOGIN = 302


@pytest.fixture
def registry() -> None:
    alpha = ModelDefinition.objects.create(name="alpha", model_path="sim/alpha", port=18001)
    ModelAlias.objects.create(name="first", model=alpha)
    ModelDefinition.objects.create(name="beta", model_path="sim/beta", port=18002)
    ModelDefinition.objects.create(name="off", model_path="sim/off", port=18003, enabled=False)


def user_for(role: str) -> User:
    user = User.objects.create_user(role, password=f"{role}-pw-1", is_superuser=role == "admin")
    if role == "operator":
        user.groups.add(Group.objects.get_or_create(name=OPERATOR_GROUP)[0])
    return user


def browser(role: str | None) -> Client:
    """A client that checks CSRF as a browser's request is checked, holding the token."""
    client = Client(enforce_csrf_checks=True)
    if role is not None:
        client.force_login(user_for(role))
    client.get("/login/")  # sets the CSRF cookie, as any page with a form does
    return client


def mint(client: Client, **headers: str) -> object:
    token = client.cookies["csrftoken"].value
    return client.post(URL, headers={"X-CSRFToken": token, **headers})


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "anonymous")
def test_every_role_and_method_is_answered_as_expected(
    role: str | None, method: str, registry: None
) -> None:
    client = browser(role)
    token = client.cookies["csrftoken"].value
    answer = getattr(client, method)(URL, headers={"X-CSRFToken": token})
    if role is None:
        expected = LOGIN
    elif method != "post":
        expected = 405
    else:
        expected = 403 if role == "viewer" else 200
    assert answer.status_code == expected
    if expected == LOGIN:
        assert answer["Location"].startswith("/login/")
    minted = ApiKey.objects.filter(kind=KeyKind.PLAYGROUND).count()
    assert minted == (1 if expected == 200 else 0)


def test_a_viewer_is_refused_and_the_refusal_is_audited(registry: None) -> None:
    answer = mint(browser("viewer"))
    assert answer.status_code == 403  # type: ignore[attr-defined]
    assert answer.json() == {"error": "viewers cannot change anything"}  # type: ignore[attr-defined]
    entries = AuditEntry.objects.values_list("actor_name", "action", "result", "source")
    assert list(entries) == [("viewer", "mint_playground_key", "refused", "dashboard")]
    assert not ApiKey.objects.exists()


def test_it_refuses_a_post_without_the_csrf_token_or_from_another_site(registry: None) -> None:
    client = browser("operator")
    assert client.post(URL).status_code == 403  # no token
    forged = mint(client, Origin="https://elsewhere.example")  # another site's page
    assert forged.status_code == 403  # type: ignore[attr-defined]
    assert not ApiKey.objects.exists()
    assert mint(client).status_code == 200  # type: ignore[attr-defined]


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_the_key_is_scoped_short_lived_limited_and_audited(role: str, registry: None) -> None:
    before = timezone.now()
    answer = mint(browser(role)).json()  # type: ignore[attr-defined]
    assert answer["models"] == ["alpha", "beta"]  # the enabled ones: not "off"
    assert 60 <= answer["expires_in"] <= 15 * 60
    parts = split_key(answer["key"])
    assert parts is not None
    key = ApiKey.objects.get(prefix=parts[0])
    assert key.secret_hash == hash_secret(parts[1])
    assert (key.kind, key.scopes, key.rpm_limit) == (KeyKind.PLAYGROUND, ["alpha", "beta"], 60)
    assert key.created_by is not None and key.created_by.username == role
    assert key.expires_at is not None
    assert before + timedelta(minutes=1) < key.expires_at <= timezone.now() + timedelta(minutes=15)
    (entry,) = AuditEntry.objects.all()
    assert (entry.actor_name, entry.action, entry.result) == (role, "mint_playground_key", "ok")
    assert key.prefix in entry.detail and "alpha, beta" in entry.detail
    assert parts[1] not in entry.detail  # the secret is nowhere but in the answer


def test_the_gateway_takes_the_key_for_those_models_only_until_it_expires(
    registry: None,
) -> None:
    plaintext = mint(browser("operator")).json()["key"]  # type: ignore[attr-defined]
    table = KeyTable(required=True, records=key_records())
    record = table.identify(f"Bearer {plaintext}")
    names = {"alpha": "alpha", "first": "alpha", "beta": "beta", "off": "off"}
    assert may_use(record, "alpha", names.get) and may_use(record, "first", names.get)
    assert may_use(record, "beta", names.get)
    assert not may_use(record, "off", names.get)
    assert not may_use(record, "added-later", names.get)
    assert record is not None and record.expires_at is not None
    table.clock = lambda: record.expires_at + 1  # type: ignore[operator]
    with pytest.raises(GatewayError) as expired:
        table.identify(f"Bearer {plaintext}")
    assert expired.value.status == 401


def test_a_minted_key_cannot_mint_more_or_reach_the_management_api(registry: None) -> None:
    plaintext = mint(browser("admin")).json()["key"]  # type: ignore[attr-defined]
    holder = browser(None)  # the key and a CSRF token (any visitor gets one), no session
    assert mint(holder, Authorization=f"Bearer {plaintext}").status_code == LOGIN  # type: ignore[attr-defined]
    assert ApiKey.objects.count() == 1
    for scheme in ("Bearer", "Token"):
        api = APIClient(HTTP_AUTHORIZATION=f"{scheme} {plaintext}")
        assert api.get("/api/status/").status_code == 401, scheme
        assert api.post("/api/keys/", {"name": "more"}, format="json").status_code == 401
        assert api.post("/api/mode/", {"mode": "manual"}, format="json").status_code == 401
        assert api.get("/control/status").status_code == 401, scheme
    assert ApiKey.objects.count() == 1


def test_it_mints_nothing_when_no_model_is_enabled(registry: None) -> None:
    ModelDefinition.objects.update(enabled=False)
    answer = mint(browser("operator"))
    assert answer.status_code == 409  # type: ignore[attr-defined]
    assert not ApiKey.objects.exists()  # an empty scope list would mean every model
    assert AuditEntry.objects.get().result == "failed"


def test_a_user_holds_a_bounded_number_of_live_keys(registry: None) -> None:
    operator = browser("operator")
    for _ in range(playground_keys.LIVE_PER_USER):
        assert mint(operator).status_code == 200  # type: ignore[attr-defined]
    over = mint(operator)
    assert over.status_code == 429  # type: ignore[attr-defined]
    assert "wait" in over.json()["error"]  # type: ignore[attr-defined]
    assert mint(browser("admin")).status_code == 200  # type: ignore[attr-defined]
    # An expired key no longer counts against its user.
    one = ApiKey.objects.filter(created_by__username="operator").values("pk")[:1]
    ApiKey.objects.filter(pk__in=one).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert mint(operator).status_code == 200  # type: ignore[attr-defined]


def test_keys_long_expired_are_deleted_and_other_keys_kept(registry: None) -> None:
    now = timezone.now()
    old = now - playground_keys.KEEP_EXPIRED - timedelta(seconds=1)
    recent = now - timedelta(seconds=1)
    stale = api_keys.create_key("p1", scopes=["alpha"], expires_at=old, kind=KeyKind.PLAYGROUND)
    fresh = api_keys.create_key("p2", scopes=["alpha"], expires_at=recent, kind=KeyKind.PLAYGROUND)
    client = api_keys.create_key("c", expires_at=old)
    assert playground_keys.delete_expired() == 1
    left = set(ApiKey.objects.values_list("pk", flat=True))
    assert left == {fresh.key.pk, client.key.pk}
    assert stale.key.pk not in left


def test_logging_out_revokes_that_users_playground_keys_only(registry: None) -> None:
    operator = browser("operator")
    mine = mint(operator).json()["key"]  # type: ignore[attr-defined]
    theirs = mint(browser("admin")).json()["key"]  # type: ignore[attr-defined]
    owner = User.objects.get(username="operator")
    client_key = api_keys.create_key("ci", created_by=owner)
    token = operator.cookies["csrftoken"].value
    assert operator.post("/logout/", headers={"X-CSRFToken": token}).status_code == LOGIN
    revoked = dict(ApiKey.objects.values_list("prefix", "revoked"))
    assert revoked[split_key(mine)[0]]  # type: ignore[index]
    assert not revoked[split_key(theirs)[0]]  # type: ignore[index]
    assert not revoked[client_key.key.prefix]


def test_the_page_offers_sending_to_those_who_may_act_only(registry: None) -> None:
    viewer = browser("viewer").get("/playground/").content.decode()
    assert "Viewers cannot send requests" in viewer and "disabled" in viewer
    operator = browser("operator").get("/playground/").content.decode()
    assert "Viewers cannot send" not in operator
    assert 'data-key-url="/playground/key/"' in operator
    assert "csrfmiddlewaretoken" in operator and "llmux/playground.js" in operator


def test_the_workers_sweep_deletes_them_too(registry: None) -> None:
    old = timezone.now() - playground_keys.KEEP_EXPIRED - timedelta(minutes=1)
    api_keys.create_key("p", scopes=["alpha"], expires_at=old, kind=KeyKind.PLAYGROUND)
    sweeper.one_pass(0)  # the pass that also collects image garbage
    assert not ApiKey.objects.exists()
