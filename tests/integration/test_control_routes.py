"""llmux's `/control/*` routes with llmux's request bodies, against a running llmux (a
real worker, simulated engines): llmux's response bodies and status codes, the effects
in `/v1/models`, `/control/status` and the swap history, and the management API's
authentication and roles."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from tests.integration.harness import Llmux
from tests.integration.test_switching import ask, two_models

USER = (
    "from django.contrib.auth.models import Group, User; "
    "from models_app.services.api_tokens import create_token; "
    "u = User.objects.create_user({name!r}); "
    "[u.groups.add(Group.objects.get_or_create(name=g)[0]) for g in {groups!r}]; "
    "print('TOKEN=' + create_token(u).plaintext)"
)


def token(server: Llmux, name: str, *groups: str) -> str:
    out = server.manage(USER.format(name=name, groups=list(groups)))
    return next(line[6:] for line in out.splitlines() if line.startswith("TOKEN="))


class Control:
    """llmux's control API over HTTP, as an operator's script calls it."""

    def __init__(self, server: Llmux, key: str) -> None:
        self.root = server.base_url.removesuffix("/v1")
        self.key = key

    def call(self, method: str, route: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.root}/control/{route}", data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.key:
            request.add_header("Authorization", f"Token {self.key}")
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as failed:
            return failed.code, json.loads(failed.read())

    def get(self, route: str) -> tuple[int, Any]:
        return self.call("GET", route)

    def post(self, route: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        return self.call("POST", route, body)

    def states(self) -> dict[str, str]:
        return {m: s["process_state"] for m, s in self.get("status")[1]["models"].items()}


def served_models(server: Llmux) -> list[str]:
    with urllib.request.urlopen(f"{server.base_url}/models", timeout=30) as answer:
        return sorted(m["id"] for m in json.loads(answer.read())["data"])


def test_status_mode_pin_switch_and_unpin(llmux: Llmux) -> None:
    llmux.start(two_models())
    ops = Control(llmux, token(llmux, "ops", "operator"))
    assert ops.get("status") == (
        200,
        {
            "state": "idle",
            "active_model": None,
            "mode": {"mode": "auto"},
            "models": {
                name: {"in_flight": 0, "queue_depth": 0, "process_state": "not_started"}
                for name in ("alpha", "beta")
            },
        },
    )
    assert ops.post("switch", {"model": "alpha"}) == (200, {"message": "Switched to model: alpha"})
    status = ops.get("status")[1]
    assert (status["state"], status["active_model"]) == ("active:alpha", "alpha")
    assert ops.states() == {"alpha": "running", "beta": "not_started"}
    assert served_models(llmux) == ["alpha", "beta"]

    assert ops.post("pin", {"model": "beta"}) == (200, {"message": "Pinned to model: beta"})
    status = ops.get("status")[1]
    assert status["mode"] == {"mode": "manual", "pinned": "beta"}
    assert status["state"] == "active:beta"
    assert ops.states() == {"alpha": "sleeping:Offload+KeepRunning", "beta": "running"}
    # The pin as a client sees it: beta answers, alpha is refused (manual mode).
    client = llmux.client()
    assert ask(client, "beta")
    with pytest.raises(openai.APIStatusError) as refused:
        ask(client, "alpha")
    assert refused.value.status_code == 503

    # In manual mode a switch moves the pin to its target (llmux's rule).
    assert ops.post("switch", {"model": "alpha"}) == (200, {"message": "Switched to model: alpha"})
    assert ops.get("status")[1]["mode"] == {"mode": "manual", "pinned": "alpha"}
    assert ops.post("unpin") == (200, {"message": "Unpinned. Switched to auto mode."})
    assert ops.get("status")[1]["mode"] == {"mode": "auto"}

    assert ops.post("mode", {"mode": "bogus"}) == (
        400,
        {"message": "Unknown mode: bogus. Use 'auto' or 'manual'."},
    )
    assert ops.post("mode", {"mode": "manual"}) == (200, {"message": "Switched to manual mode"})
    assert ops.get("status")[1]["mode"] == {"mode": "manual"}
    assert ops.post("mode", {"mode": "auto"}) == (200, {"message": "Switched to auto mode"})

    swaps = llmux.query(
        "SELECT to_name, trigger, actor, outcome FROM models_app_swapevent ORDER BY id"
    )
    assert swaps == [
        ("alpha", "api", "ops", "succeeded"),
        ("beta", "api", "ops", "succeeded"),
        ("alpha", "api", "ops", "succeeded"),
    ]
    audited = llmux.query("SELECT action, target, source FROM models_app_auditentry ORDER BY id")
    assert [row[0] for row in audited] == ["switch", "pin", "switch", "unpin", "mode", "mode"]
    assert {row[2] for row in audited} == {"api"}


def test_sleep_wake_levels_and_eviction(llmux: Llmux) -> None:
    llmux.start(two_models())
    ops = Control(llmux, token(llmux, "ops", "operator"))
    assert ops.post("wake", {"model": "alpha"}) == (200, {"message": "Model alpha woken"})
    assert ops.post("sleep", {"model": "alpha"}) == (
        200,
        {
            "message": "Model alpha sleeping with policy "
            "EvictionPolicy { weights: Offload, process: KeepRunning }"
        },
    )
    assert ops.states()["alpha"] == "sleeping:Offload+KeepRunning"
    assert ops.post("wake", {"model": "alpha"})[0] == 200
    assert ops.post("sleep", {"model": "alpha", "level": 2}) == (
        200,
        {"message": "Model alpha sleeping at level L2"},
    )
    assert ops.get("sleep-levels") == (
        200,
        {
            "models": {
                "alpha": {"effective_level": 1, "process_state": "sleeping:L2"},
                "beta": {"effective_level": 2, "process_state": "not_started"},
            }
        },
    )
    assert ops.post("sleep-level", {"model": "beta", "level": 5}) == (
        200,
        {"message": "Sleep level for beta set to 5 (Stop)"},
    )
    assert ops.get("sleep-levels")[1]["models"]["beta"]["effective_level"] == 5
    assert ops.post("sleep-level", {"model": "beta", "level": 9}) == (
        400,
        {"error": "Invalid sleep level: 9. Must be 1-5."},
    )
    assert ops.post(
        "eviction",
        {"model": "alpha", "eviction": {"weights": "discard", "process": "keep_running"}},
    ) == (
        200,
        {
            "message": "Eviction policy for alpha set to "
            "EvictionPolicy { weights: Discard, process: KeepRunning }"
        },
    )
    assert ops.get("eviction") == (
        200,
        {
            "models": {
                "alpha": {
                    "eviction": {"weights": "discard", "process": "keep_running"},
                    "process_state": "sleeping:Discard+KeepRunning",
                },
                "beta": {
                    "eviction": {"weights": "retain", "process": "stop"},
                    "process_state": "not_started",
                },
            }
        },
    )
    evictions = llmux.query(
        "SELECT from_name, to_name, trigger, outcome FROM models_app_swapevent "
        "WHERE to_name = '' ORDER BY id"
    )
    assert evictions == [("alpha", "", "api", "succeeded")] * 2


def test_unknown_models_failures_and_who_may_call(llmux: Llmux) -> None:
    config = two_models()
    config["models"]["beta"]["extra_args"] += ["--sim-fault", "crash=startup"]
    llmux.start(config)
    ops = Control(llmux, token(llmux, "ops", "operator"))
    for route in ("pin", "switch", "sleep", "wake", "sleep-level", "eviction"):
        body = {"model": "nope", "level": 1, "eviction": {"weights": "offload"}}
        assert ops.post(route, body) == (404, {"error": "Model not found: nope"}), route

    status, body = ops.post("switch", {"model": "beta"})
    assert status == 500 and body["error"].startswith("Switch failed: "), body
    status, body = ops.post("pin", {"model": "beta"})
    assert status == 500 and body["error"].startswith("Failed to switch to pinned model: ")
    assert ops.get("status")[1]["mode"] == {"mode": "auto"}  # the pin is rolled back
    assert [row[1:3] for row in llmux.swaps()] == [("beta", "failed"), ("beta", "failed")]

    viewer = Control(llmux, token(llmux, "watcher"))
    assert viewer.get("status")[0] == 200
    assert viewer.post("switch", {"model": "alpha"})[0] == 403
    anonymous = Control(llmux, "")
    assert anonymous.get("status")[0] == 401
    refused = llmux.query(
        "SELECT actor_name, action, result FROM models_app_auditentry WHERE result = 'refused'"
    )
    assert refused == [("watcher", "switch", "refused")]
