"""What a real switch records in its swap row: every phase (the cooldown, the check and the
settle too), the wait in the queue before it, and the operation, so its phases add up."""

from __future__ import annotations

from typing import Any

from tests.integration.harness import Llmux, sim_model
from tests.integration.invariants import wait_until
from tests.integration.test_switching import ask
from tests.plugins.engines import free_port

PHASES = ("backoff", "check", "cooldown", "drain", "evict", "bringup", "readiness", "settle")


def swap_rows(llmux: Llmux) -> list[dict[str, Any]]:
    llmux.swaps()  # once none is in progress
    columns = ("to_name", "operation", "queue_ms", "total_ms", *(f"{p}_ms" for p in PHASES))
    # The column names are this module's own constants, not input.
    select = f"SELECT {', '.join(columns)} FROM models_app_swapevent ORDER BY id"  # noqa: S608
    rows = llmux.query(select)
    return [dict(zip(columns, row, strict=True)) for row in rows]


def test_a_switch_records_every_phase_and_its_queue_wait(llmux: Llmux) -> None:
    llmux.start(
        {
            "vllm_command": "llmux-sim",
            "policy": {"min_active_secs": 1, "request_timeout_secs": 60},
            "models": {
                "alpha": sim_model(free_port(), sleep_level=1),
                "beta": sim_model(free_port(), sleep_level=1),
            },
        }
    )
    client = llmux.client()
    ask(client, "alpha")
    ask(client, "beta")  # alpha is kept for its min_active_secs first: a cooldown
    first, second = swap_rows(llmux)
    assert (first["to_name"], second["to_name"]) == ("alpha", "beta")
    assert second["operation"] == "switch" and second["queue_ms"] >= 0
    assert all(second[f"{p}_ms"] is not None for p in PHASES), second
    # Every phase is timed inside the switch's total; the rest is the writes between them.
    assert sum(second[f"{p}_ms"] for p in PHASES) <= second["total_ms"], second
    assert first["drain_ms"] is None and first["evict_ms"] is None  # nothing to evict


def test_an_eviction_is_recorded_as_one_with_its_actor(llmux: Llmux) -> None:
    llmux.start(
        {
            "vllm_command": "llmux-sim",
            "policy": {"min_active_secs": 0, "request_timeout_secs": 60},
            "models": {"alpha": sim_model(free_port(), sleep_level=1)},
        }
    )
    ask(llmux.client(), "alpha")
    llmux.manage(
        "from models_app.models import ModelDefinition; "
        "from models_app.services import control; "
        "control.evict(ModelDefinition.objects.get(name='alpha'), actor='ops-ann')"
    )
    wait_until(lambda: llmux.states()["alpha"] == "sleeping", timeout=30, what="alpha evicted")
    rows = swap_rows(llmux)
    assert [(r["to_name"], r["operation"]) for r in rows] == [("alpha", "switch"), ("", "evict")]
    ((actor, trigger),) = llmux.query(
        "SELECT actor, trigger FROM models_app_swapevent WHERE operation = 'evict'"
    )
    assert (actor, trigger) == ("ops-ann", "api")
