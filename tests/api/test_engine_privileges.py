"""What an engine runs is an administrator's decision (issue 12, finding 1).

Through the REST API and the dashboard an operator may set only allow-listed engine flags
and environment variables, local model paths under the roots and simulator engines; a
command, a generic engine, any other flag or variable, `--trust-remote-code`, a path flag
outside the roots and a model fetched from a hub are the administrator's. An operator may
still edit a model an administrator configured, keeping what the administrator set.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client, override_settings
from rest_framework.test import APIClient

from models_app.models import AuditEntry, AuditResult, ModelDefinition

pytestmark = pytest.mark.django_db

ROOTS = ["/models", "/var/lib/llmux"]
VLLM = {"model_path": "/models/qwen", "port": 18601}
SIM = {"engine": "simulator", "model_path": "sim/anything", "port": 18602}


def person(role: str) -> User:
    user = User.objects.filter(username=role).first()
    if user is not None:
        return user
    user = User.objects.create_user(role, password="pw-12345678", is_superuser=role == "admin")
    if role != "admin":
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def api(role: str) -> APIClient:
    client = APIClient()
    client.force_authenticate(person(role))
    return client


def create(client: APIClient, definition: dict[str, Any], name: str = "m") -> Any:
    with override_settings(LLMUX_PATH_ROOTS=ROOTS):
        return client.post("/api/models/", {"name": name, "definition": definition}, "json")


REFUSED_FOR_OPERATORS: list[tuple[str, dict[str, Any], str]] = [
    (
        "a generic engine's command",
        {
            "engine": "generic",
            "command": ["/bin/sh", "-c", "id > /tmp/pwned"],
            "port": 18603,
            "model_path": "/models/x",
        },
        "command",
    ),
    ("LD_PRELOAD", {**VLLM, "env": {"LD_PRELOAD": "/tmp/evil.so"}}, "env"),
    ("PATH", {**VLLM, "env": {"PATH": "/tmp/bin:/usr/bin"}}, "env"),
    ("PYTHONPATH", {**VLLM, "env": {"PYTHONPATH": "/tmp/mods"}}, "env"),
    ("--trust-remote-code", {**VLLM, "extra_args": ["--trust-remote-code"]}, "extra_args"),
    (
        "a chat template outside the roots",
        {**VLLM, "extra_args": ["--chat-template", "/etc/shadow"]},
        "extra_args",
    ),
    (
        "a chat template outside the roots, inline form",
        {**VLLM, "extra_args": ["--chat-template=/etc/shadow"]},
        "extra_args",
    ),
    (
        "an unlisted flag",
        {**VLLM, "extra_args": ["--tool-parser-plugin", "/tmp/p.py"]},
        "extra_args",
    ),
    ("a stray argument", {**VLLM, "extra_args": ["--enforce-eager", "other/model"]}, "extra_args"),
    ("a model from a hub", {**VLLM, "model_path": "Qwen/Qwen2.5-7B-Instruct"}, "model_path"),
    ("a vLLM executable", {**VLLM, "command": ["/tmp/vllm"]}, "command"),
]


@pytest.mark.parametrize(("case", "definition", "field"), REFUSED_FOR_OPERATORS)
def test_it_refuses_an_operator_what_only_an_administrator_may_set(
    case: str, definition: dict[str, Any], field: str
) -> None:
    response = create(api("operator"), definition)
    assert response.status_code == 400, (case, response.content)
    assert f"models.m.{field}" in response.content.decode()
    assert "only an administrator" in response.content.decode()
    assert not ModelDefinition.objects.exists()
    refusal = AuditEntry.objects.get(action="create_model")
    assert (refusal.result, refusal.actor_name) == (AuditResult.FAILED, "operator")


@pytest.mark.parametrize(("case", "definition", "field"), REFUSED_FOR_OPERATORS)
def test_an_administrator_may_set_it(case: str, definition: dict[str, Any], field: str) -> None:
    response = create(api("admin"), definition)
    assert response.status_code == 201, (case, response.content)


@pytest.mark.parametrize(
    "definition",
    [
        {
            **VLLM,
            "extra_args": [
                "--max-model-len",
                "2048",
                "--gpu-memory-utilization=0.5",
                "--enforce-eager",
                "-tp",
                "2",
                "--dtype",
                "bfloat16",
            ],
        },
        {**VLLM, "extra_args": ["--chat-template", "/models/qwen/template.jinja"]},
        {**VLLM, "extra_args": ["--chat-template", "{{ messages }}"]},
        {**VLLM, "env": {"OMP_NUM_THREADS": "4", "VLLM_LOGGING_LEVEL": "DEBUG"}},
        {**SIM, "extra_args": ["--sim-weights-bytes", "1MiB", "--sim-legacy-api"]},
    ],
)
def test_an_operator_may_tune_an_engine(definition: dict[str, Any]) -> None:
    response = create(api("operator"), definition)
    assert response.status_code == 201, response.content


def test_an_operator_keeps_what_an_administrator_set_but_adds_nothing() -> None:
    admin_set = {**VLLM, "extra_args": ["--trust-remote-code"], "env": {"HF_ENDPOINT": "x"}}
    assert create(api("admin"), admin_set).status_code == 201
    operator = api("operator")
    with override_settings(LLMUX_PATH_ROOTS=ROOTS):
        kept = operator.patch("/api/models/m/", {"definition": {"description": "tuned"}}, "json")
        assert kept.status_code == 200, kept.content
        changed = operator.patch(
            "/api/models/m/", {"definition": {"env": {"HF_ENDPOINT": "https://evil"}}}, "json"
        )
        assert changed.status_code == 400
        added = operator.patch(
            "/api/models/m/",
            {"definition": {"extra_args": ["--trust-remote-code", "--enforce-eager"]}},
            "json",
        )
        assert added.status_code == 200, added.content  # a listed flag beside the kept one
    model = ModelDefinition.objects.get()
    assert model.env == {"HF_ENDPOINT": "x"}
    assert model.extra_args == ["--trust-remote-code", "--enforce-eager"]


def test_the_dashboard_edit_form_refuses_an_operator_a_command() -> None:
    assert create(api("admin"), SIM).status_code == 201
    browser = Client()
    browser.force_login(person("operator"))
    generic = (
        '{"engine": "generic", "command": ["/bin/sh", "-c", "id"], "model_path": "x",'
        ' "port": 18602}'
    )
    with override_settings(LLMUX_PATH_ROOTS=ROOTS):
        browser.post("/actions/edit/", {"model": "m", "definition": generic})
    model = ModelDefinition.objects.get()
    assert (model.engine_kind, model.command) == ("simulator", [])
    refusal = AuditEntry.objects.get(action="edit")
    assert refusal.result == AuditResult.FAILED
    assert "only an administrator" in refusal.detail


@pytest.mark.parametrize("port", [22, 80, 5432, 6379, 3306])
def test_an_engine_may_not_take_a_reserved_port(port: int) -> None:
    response = create(api("admin"), {**SIM, "port": port})
    assert response.status_code == 400, response.content
    assert "models.m.port" in response.content.decode()
    assert not ModelDefinition.objects.exists()


def test_an_engine_may_not_take_llmux_s_own_port() -> None:
    with override_settings(LLMUX_BIND_PORT=18602):
        response = create(api("admin"), SIM)
    assert response.status_code == 400
    assert "the port llmux itself serves on" in response.content.decode()


def test_the_denied_ports_are_configurable() -> None:
    with override_settings(LLMUX_DENIED_PORTS=frozenset({18602})):
        assert create(api("admin"), SIM).status_code == 400
    with override_settings(LLMUX_DENIED_PORTS=frozenset()):
        assert create(api("admin"), {**SIM, "port": 22}).status_code == 201
