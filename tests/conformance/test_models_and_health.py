"""`/v1/models` and `/health`: what each engine lists and what its socket answers from the
moment it is spawned until it serves (seen while llmux cold-started it)."""

from __future__ import annotations

import pytest

from tests.conformance import shapes
from tests.conformance.shapes import keys
from tests.conformance.stack import CHAT, EMBED, MAX_MODEL_LEN, Stack

# The first scenario of each engine kind starts it: a real vLLM pair takes about a minute
# here (more on a loaded machine, plus its install the first time).
pytestmark = pytest.mark.timeout(900)


def test_an_engine_lists_its_served_name_with_vllm_s_fields(stack: Stack) -> None:
    direct = stack.target("direct")
    for name in (CHAT, EMBED):
        reply = direct.send(name, "GET", "/v1/models")

        assert (reply.status, reply.content_type) == (200, "application/json")
        listing = reply.json()
        assert keys(listing) == {"object", "data"} and listing["object"] == "list"
        [model] = listing["data"]
        assert keys(model) == shapes.MODEL
        assert (model["id"], model["object"], model["owned_by"]) == (name, "model", "vllm")
        assert (model["max_model_len"], model["parent"]) == (MAX_MODEL_LEN, None)
        assert isinstance(model["root"], str) and isinstance(model["created"], int)
        [permission] = model["permission"]
        assert keys(permission) == shapes.PERMISSION
        assert permission["object"] == "model_permission"


def test_the_gateway_lists_the_registry_s_models(stack: Stack) -> None:
    reply = stack.target("gateway").send(CHAT, "GET", "/v1/models")

    assert reply.status == 200
    listing = reply.json()
    assert listing["object"] == "list"
    models = {model["id"]: model for model in listing["data"]}
    assert set(models) == {CHAT, EMBED}
    for model in models.values():
        assert (model["object"], model["max_model_len"]) == ("model", MAX_MODEL_LEN)
        assert isinstance(model["owned_by"], str)
        assert isinstance(model["created"], int) and model["created"] > 0  # as OpenAI's


def test_health_refuses_connections_while_the_engine_starts_then_answers_200(
    stack: Stack,
) -> None:
    # vLLM binds its socket early and listens only once it serves: no file at first, then
    # a file that refuses connections (tens of seconds for a real vLLM), then 200. Never a
    # 5xx: a client must read "refused" as "not yet", not as "dead".
    for name in (CHAT, EMBED):
        assert stack.start_states[name] == ["absent", "refused", "200"], name


def test_health_answers_200_with_an_empty_body_once_up(stack: Stack) -> None:
    direct = stack.target("direct")  # the gateway forwards inference routes only
    for name in (CHAT, EMBED):
        reply = direct.send(name, "GET", "/health")
        assert (reply.status, reply.body) == (200, b"")
