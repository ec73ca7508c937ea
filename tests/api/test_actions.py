"""The operator actions the REST API and the dashboard both call (models_app.services):
each refuses, carries out and audits by itself, whoever calls it; reads never insert."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from models_app.models import (
    AuditEntry,
    EngineRuntime,
    ModelDefinition,
    RegistryConfig,
    SwitchRequest,
)
from models_app.roles import OPERATOR_GROUP
from models_app.services import definition_actions, operator_actions
from models_app.services.acting import Acting, ActionError
from models_app.snapshot import api_status, status_snapshot

pytestmark = pytest.mark.django_db


def person(role: str) -> User:
    user = User.objects.create_user(role, password="pw-12345678", is_superuser=role == "admin")
    if role == "operator":
        user.groups.add(Group.objects.get_or_create(name=OPERATOR_GROUP)[0])
    return user


@pytest.fixture
def models() -> None:
    for name, port in (("alpha", 18001), ("beta", 18002)):
        ModelDefinition.objects.create(name=name, model_path=f"sim/{name}", port=port)


def audit_rows() -> list[tuple[str, str, str, str, str]]:
    rows = AuditEntry.objects.order_by("id")
    return list(rows.values_list("actor_name", "action", "target", "source", "result"))


def test_an_action_audits_itself(models: None) -> None:
    acting = Acting(person("operator"), "api", "10.0.0.9")
    outcome = operator_actions.do_switch("alpha", acting=acting)
    assert outcome.operation == SwitchRequest.objects.get().pk
    assert audit_rows() == [("operator", "switch", "alpha", "api", "queued")]
    assert AuditEntry.objects.get().remote_addr == "10.0.0.9"


def test_an_action_refuses_a_viewer_whoever_calls_it(models: None) -> None:
    with pytest.raises(PermissionError):
        operator_actions.do_stop("alpha", acting=Acting(person("viewer"), "dashboard"))
    assert SwitchRequest.objects.count() == 0
    assert audit_rows() == [("viewer", "stop", "alpha", "dashboard", "refused")]


def test_a_failed_action_is_audited_with_its_reason(models: None) -> None:
    with pytest.raises(ActionError, match="frees no GPU memory"):
        operator_actions.do_evict(
            "alpha", weights="retain", process="keep_running", acting=Acting(person("admin"), "api")
        )
    entry = AuditEntry.objects.get()
    assert (entry.result, "frees no GPU memory" in entry.detail) == ("failed", True)


def test_a_busy_gpu_group_refuses_only_a_caller_that_will_not_wait(models: None) -> None:
    acting = Acting(person("operator"), "api")
    operator_actions.do_switch("alpha", acting=acting)
    SwitchRequest.objects.update(status="running")  # a worker is carrying it out
    with pytest.raises(operator_actions.GroupBusy, match="is running on GPU group"):
        operator_actions.do_switch("beta", acting=acting, wait_for_group=False)
    assert len(audit_rows()) == 1  # refused before anything was attempted, as the API did
    operator_actions.do_switch("beta", acting=acting)  # the dashboard queues behind it
    assert SwitchRequest.objects.filter(target__name="beta").exists()


def test_keys_are_for_administrators_even_when_called_directly(models: None) -> None:
    with pytest.raises(PermissionError):
        definition_actions.do_create_key(
            "k",
            scopes=[],
            rpm_limit=None,
            expires_at=None,
            acting=Acting(person("operator"), "api"),
        )
    assert audit_rows() == [("operator", "create_key", "k", "api", "refused")]


def test_the_snapshot_reads_and_never_inserts(models: None) -> None:
    state = status_snapshot()
    assert [row["state"] for row in state["models"]] == ["not_started", "not_started"]
    assert (state["mode"], state["pinned"], api_status()["active"]) == ("auto", None, [])
    assert not RegistryConfig.objects.exists() and not EngineRuntime.objects.exists()


def test_reading_definitions_through_the_api_inserts_nothing(models: None) -> None:
    api = APIClient()
    api.force_authenticate(person("viewer"))
    for path in ("/api/models/", "/api/models/alpha/", "/api/status/"):
        assert api.get(path).status_code == 200, path
    assert not RegistryConfig.objects.exists() and not EngineRuntime.objects.exists()


def test_the_api_status_is_the_snapshot_with_the_running_models_last(models: None) -> None:
    model = ModelDefinition.objects.get(name="beta")
    EngineRuntime.objects.create(model=model, state="running", pid=4321, create_time=1.0)
    state = api_status()
    assert list(state)[-1] == "active" and state["active"] == ["beta"]
