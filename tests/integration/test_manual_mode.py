"""Manual mode as llmux defines it, against a running llmux with simulated engines:
nothing switches automatically, a forced switch moves the pin to its target, and a pin
whose switch fails puts the mode and pin back; each recorded in the swap history and the
audit log."""

from __future__ import annotations

import time

import openai
import pytest

from tests.integration.harness import Llmux
from tests.integration.test_control import CONTROL
from tests.integration.test_switching import ask, two_models


def control(server: Llmux, call: str) -> None:
    server.manage(CONTROL + call)


def mode(server: Llmux) -> tuple[str, str | None]:
    ((current, pinned),) = server.query(
        "SELECT c.mode, m.name FROM models_app_registryconfig c "
        "LEFT JOIN models_app_modeldefinition m ON m.id = c.pinned_model_id"
    )
    return current, pinned


def refused(client: openai.OpenAI, model: str) -> str:
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, model)
    assert caught.value.status_code == 503
    assert set(caught.value.response.json()["error"]) >= {"message", "type", "param", "code"}
    return str(caught.value.message)


def request_switches(server: Llmux) -> list[tuple[str, str]]:
    """(target, status) of every switch a client request queued."""
    return server.query(
        "SELECT m.name, r.status FROM models_app_switchrequest r "
        "JOIN models_app_modeldefinition m ON m.id = r.target_id "
        "WHERE r.trigger = 'request' ORDER BY r.id"
    )


def test_in_manual_mode_the_pinned_model_is_not_started_by_a_request(llmux: Llmux) -> None:
    llmux.start(two_models())
    client = llmux.client()
    control(llmux, "control.pin(M.objects.get(name='beta'), actor='ops')")
    assert ask(client, "beta")  # waits for the pin's own switch, queues none
    control(llmux, "control.stop(M.objects.get(name='beta'), actor='ops')")
    llmux.wait_for_states({"beta": "stopped"})
    swaps = len(llmux.swaps())

    assert "not running" in refused(client, "beta")  # the pinned model, like any other
    assert "manual mode" in refused(client, "alpha")
    assert request_switches(llmux) == []
    assert len(llmux.swaps()) == swaps
    assert llmux.states()["beta"] == "stopped"

    control(llmux, "control.set_mode('auto')")
    assert ask(client, "alpha")  # auto again: a request switches
    llmux.swaps()  # settled
    assert request_switches(llmux) == [("alpha", "succeeded")]


def test_a_forced_switch_in_manual_mode_moves_the_pin_to_its_target(llmux: Llmux) -> None:
    llmux.start(two_models())
    client = llmux.client()
    control(llmux, "control.pin(M.objects.get(name='beta'), actor='ops')")
    llmux.wait_for_states({"beta": "running"})
    control(llmux, "control.force_switch(M.objects.get(name='alpha'), actor='ops')")
    assert mode(llmux) == ("manual", "alpha")
    assert ask(client, "alpha")
    assert "manual mode" in refused(client, "beta")
    assert [(swap[1], swap[2]) for swap in llmux.swaps()][-2:] == [
        ("beta", "succeeded"),
        ("alpha", "succeeded"),
    ]


def test_a_pin_whose_switch_fails_puts_the_mode_and_pin_back(llmux: Llmux) -> None:
    config = two_models()
    config["models"]["beta"]["extra_args"] += ["--sim-fault", "crash=startup"]
    llmux.start(config)
    client = llmux.client()
    control(llmux, "control.pin(M.objects.get(name='alpha'), actor='ops')")
    assert ask(client, "alpha")

    control(llmux, "control.pin(M.objects.get(name='beta'), actor='ops')")
    deadline = time.monotonic() + 30
    while mode(llmux) != ("manual", "alpha") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mode(llmux) == ("manual", "alpha")  # the pin before the failed one
    assert llmux.swaps()[-1][1:3] == ("beta", "failed")
    ((actor, result, detail),) = llmux.query(
        "SELECT actor_name, result, detail FROM models_app_auditentry "
        "WHERE action = 'pin_rolled_back' AND target = 'beta'"
    )
    assert (actor, result) == ("", "failed") and "back to mode manual, pinned alpha" in detail
    assert "manual mode" in refused(client, "beta")
    # The failed switch evicted alpha first; the pin is back, and nothing switches alpha
    # in automatically: the operator does.
    assert "not running" in refused(client, "alpha")
    control(llmux, "control.force_switch(M.objects.get(name='alpha'), actor='ops')")
    assert ask(client, "alpha")

    control(llmux, "control.unpin()")
    control(llmux, "control.pin(M.objects.get(name='beta'), actor='ops')")
    deadline = time.monotonic() + 30
    while mode(llmux) != ("auto", None) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mode(llmux) == ("auto", None)  # from auto, back to auto with no pin
