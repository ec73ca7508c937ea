"""Errors: what the engine refuses comes back in OpenAI's shape with vLLM's words, passed
through the gateway unchanged; what the gateway refuses itself (a wrong type, an unknown
model) it answers before any switch, in the same shape."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.shapes import openai_error
from tests.conformance.stack import CHAT, EMBED, MAX_MODEL_LEN, Target

# The first scenario of each engine kind starts it: a real vLLM pair takes about a minute
# here (more on a loaded machine, plus its install the first time).
pytestmark = pytest.mark.timeout(900)

CHAT_BODY = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}]}
LONG = "hello " * (MAX_MODEL_LEN + 10)  # more tokens than the context for both tokenizers


def beyond(name: str, value: int) -> str:
    return (
        f"{name}={value} cannot be greater than max_model_len={MAX_MODEL_LEN}. Please request "
        f"fewer output tokens. (parameter={name}, value={value})"
    )


# (path, body, param, vLLM's message): refused by the engine, whichever way they came
ENGINE_REFUSALS: list[tuple[str, dict[str, Any], str | None, str | None]] = [
    (
        "/v1/chat/completions",
        CHAT_BODY | {"max_tokens": 5000},
        "max_tokens",
        beyond("max_tokens", 5000),
    ),
    (
        "/v1/completions",
        {"model": CHAT, "prompt": "hi", "max_tokens": 5000},
        "max_tokens",
        beyond("max_tokens", 5000),
    ),
    (
        "/v1/responses",
        {"model": CHAT, "input": "hi", "max_output_tokens": 5000},
        "max_output_tokens",
        beyond("max_output_tokens", 5000),
    ),
    ("/v1/completions", {"model": CHAT, "prompt": LONG, "max_tokens": 1}, "input_tokens", None),
    ("/v1/embeddings", {"model": EMBED, "input": LONG}, "input_tokens", None),
    (
        "/v1/chat/completions",
        CHAT_BODY | {"temperature": -1},
        "temperature",
        "temperature must be non-negative, got -1.0. (parameter=temperature, value=-1.0)",
    ),
    (
        "/v1/chat/completions",
        CHAT_BODY | {"temperature": 0, "n": 2},
        None,
        "n must be 1 when using greedy sampling, got 2.",
    ),
    (
        "/v1/completions",
        {"model": CHAT, "prompt": "hi", "stream_options": {"include_usage": True}},
        "stream_options",
        "Stream options can only be defined when `stream=True`. (parameter=stream_options)",
    ),
    (
        "/v1/completions",
        {"model": CHAT, "prompt": "hi", "max_tokens": 0},
        "max_tokens",
        "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
    ),
    ("/v1/embeddings", {"model": EMBED, "input": ""}, None, "The decoder prompt cannot be empty"),
]


@pytest.mark.parametrize(
    ("path", "body", "param", "message"),
    ENGINE_REFUSALS,
    ids=[f"{path}-{param}" for path, _body, param, _message in ENGINE_REFUSALS],
)
def test_what_the_engine_refuses_is_a_400_in_its_words(
    target: Target, path: str, body: dict[str, Any], param: str | None, message: str | None
) -> None:
    reply = target.post(path, body)

    assert (reply.status, reply.content_type) == (400, "application/json")
    error = openai_error(reply.json(), 400)
    assert (error["type"], error["param"]) == ("BadRequestError", param)
    if message is not None:
        assert error["message"] == message
    else:
        assert f"maximum context length is {MAX_MODEL_LEN} tokens" in error["message"]


@pytest.mark.parametrize(
    ("field", "value"), [("temperature", "hot"), ("max_tokens", "ten"), ("messages", "hi")]
)
def test_a_wrong_type_is_a_400_naming_the_field(target: Target, field: str, value: Any) -> None:
    reply = target.post("/v1/chat/completions", CHAT_BODY | {field: value})

    error = openai_error(reply.json(), 400)
    if target.direct:
        # vLLM's request model refused it (pydantic): the status's phrase, the body's path.
        assert (error["type"], error["param"]) == ("Bad Request", f"body.{field}")
        assert error["message"].startswith("1 validation error:")
    else:
        # The gateway checks OpenAI's field types before a request may switch a model.
        assert (error["type"], error["param"]) == ("BadRequestError", field)


def test_a_body_that_is_not_json_is_a_400(target: Target) -> None:
    reply = target.send(CHAT, "POST", "/v1/chat/completions", raw=b"{not json")

    error = openai_error(reply.json(), 400)
    assert error["type"] == ("Bad Request" if target.direct else "BadRequestError")


UNKNOWN_MODEL = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ("/v1/completions", {"prompt": "hi"}, "model"),
    ("/v1/responses", {"input": "hi"}, "model"),
    ("/tokenize", {"prompt": "hi"}, "model"),
    ("/detokenize", {"tokens": [1, 2]}, "model"),
    ("/v1/embeddings", {"input": "hi"}, None),  # vLLM's pooling routes name no param
]


@pytest.mark.parametrize(("path", "body", "param"), UNKNOWN_MODEL, ids=lambda v: str(v)[:20])
def test_an_unknown_model_is_a_404(
    target: Target, path: str, body: dict[str, Any], param: str | None
) -> None:
    engine = CHAT if path != "/v1/embeddings" else EMBED
    # Sent to the engine's socket (direct), or to llmux, which knows no such model.
    reply = target.endpoints[engine].request("POST", path, body | {"model": "no-such-model"})

    error = openai_error(reply.json(), 404)
    assert error["type"] == "NotFoundError"
    assert error["param"] == (param if target.direct else "model")
    assert "`no-such-model` does not exist" in error["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", {"model": CHAT, "input": "hi"}),
        ("/v1/chat/completions", {"model": EMBED, "messages": [{"role": "user", "content": "x"}]}),
        ("/v1/responses", {"model": EMBED, "input": "hi"}),
    ],
    ids=["embeddings-of-a-chat-model", "chat-of-an-embedding-model", "responses-of-it"],
)
def test_a_route_the_model_s_runner_lacks_is_a_404(
    target: Target, path: str, body: dict[str, Any]
) -> None:
    reply = target.post(path, body)

    assert reply.status == 404
    if target.direct:
        assert reply.json() == {"detail": "Not Found"}  # FastAPI's, not OpenAI's shape
    else:
        error = openai_error(reply.json(), 404)  # the gateway gives it OpenAI's shape
        assert (error["type"], error["message"]) == ("NotFoundError", "Not Found")
