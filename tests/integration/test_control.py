"""Operator control goes through the switcher: pin, manual mode, sleep, stop, warmup."""

from __future__ import annotations

from datetime import datetime, timedelta

import openai
import pytest

from tests.integration.harness import Llmux
from tests.integration.test_switching import ask, two_models

SLACK = timedelta(milliseconds=20)  # the backoff is timed on a monotonic clock

CONTROL = (
    "from models_app.models import ModelDefinition as M; from models_app.services import control; "
)


def test_pinning_switches_and_manual_mode_refuses_other_models(llmux: Llmux) -> None:
    llmux.start(two_models())
    llmux.manage(CONTROL + "control.pin(M.objects.get(name='beta'), actor='ops')")
    llmux.wait_for_states({"beta": "running"})
    client = llmux.client()
    assert ask(client, "beta")
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, "alpha")
    assert caught.value.status_code == 503
    assert "manual mode" in str(caught.value.message)
    llmux.manage(CONTROL + "control.unpin()")
    assert ask(llmux.client(), "alpha")
    assert llmux.states() == {"alpha": "running", "beta": "sleeping"}


def test_sleep_and_stop_from_the_operator_are_recorded(llmux: Llmux) -> None:
    llmux.start(two_models())
    client = llmux.client()
    ask(client, "alpha")
    llmux.manage(CONTROL + "control.sleep(M.objects.get(name='alpha'), actor='ops')")
    llmux.wait_for_states({"alpha": "sleeping"})
    llmux.manage(CONTROL + "control.stop(M.objects.get(name='alpha'), actor='ops')")
    llmux.wait_for_states({"alpha": "stopped"})
    evictions = llmux.query(
        "SELECT from_name, to_name, trigger, actor, outcome FROM models_app_swapevent "
        "WHERE to_name = '' ORDER BY id"
    )
    assert evictions == [
        ("alpha", "", "api", "ops", "succeeded"),
        ("alpha", "", "api", "ops", "succeeded"),
    ]
    assert ask(client, "alpha")  # a later request cold-starts it again


def test_warmup_leaves_every_model_evicted(llmux: Llmux) -> None:
    config = two_models()
    config["warmup"] = True
    llmux.start(config)
    llmux.wait_for_states({"alpha": "sleeping", "beta": "sleeping"}, timeout=60)
    triggers = {row[0] for row in llmux.query("SELECT trigger FROM models_app_swapevent")}
    assert triggers == {"warmup"}
    before = len(llmux.swaps())
    assert ask(llmux.client(), "alpha")
    last = llmux.swaps()[before:]
    assert [row[3] for row in last] == ["wake"]


def test_a_wake_failure_cleans_up_and_a_later_switch_works(llmux: Llmux) -> None:
    config = two_models()
    config["models"]["beta"]["extra_args"] += ["--sim-fault", "wake-fail-after=0"]
    llmux.start(config)
    client = llmux.client()
    ask(client, "beta")
    ask(client, "alpha")  # beta sleeps (level 2)
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, "beta")  # its wake fails
    assert caught.value.status_code == 503
    assert "switching to it failed" in str(caught.value.message)
    assert llmux.states()["beta"] == "failed"
    assert ask(client, "beta")  # cleaned up: the next request cold-starts it
    assert llmux.states() == {"alpha": "sleeping", "beta": "running"}
    # That next switch ran in the same lingering worker session, and still waited out
    # the failure backoff (2 s from the failure) before it touched anything. (On a slow
    # box the request may come after the backoff ended: then it has nothing to wait.)
    started, backoff_ms = llmux.query(
        "SELECT started_at, backoff_ms FROM models_app_swapevent WHERE to_name = 'beta' "
        "AND outcome = 'succeeded' ORDER BY id DESC LIMIT 1"
    )[0]
    # The failed wake's own row: the lease's last_failure_at is written just after it, but
    # a sweep that takes over a lease it finds expired writes it again (a loaded box).
    ((failed,),) = llmux.query(
        "SELECT MAX(finished_at) FROM models_app_swapevent WHERE to_name = 'beta' "
        "AND outcome = 'failed'"
    )
    work_began = datetime.fromisoformat(started) + timedelta(milliseconds=backoff_ms)
    assert work_began >= datetime.fromisoformat(failed) + timedelta(seconds=2) - SLACK
