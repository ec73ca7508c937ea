"""/v1/responses for a plain text request, whole and streamed, against both engines,
directly and through llmux's gateway: the answer is the chat's, in the Responses shape."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance import shapes
from tests.conformance.client import Reply
from tests.conformance.shapes import keys
from tests.conformance.stack import CHAT, Target

# The first scenario of each engine kind starts it: a real vLLM pair takes about a minute
# here (more on a loaded machine, plus its install the first time).
pytestmark = pytest.mark.timeout(900)

INPUT = "hello there"
TOKENS = 5


def respond(target: Target, **extra: Any) -> Reply:
    body = {"model": CHAT, "input": INPUT, "temperature": 0, "max_output_tokens": TOKENS}
    return target.post("/v1/responses", body | extra)


def chat_answer(target: Target) -> dict[str, Any]:
    """The chat completion of the same input (one user message) at temperature 0."""
    messages = [{"role": "user", "content": INPUT}]
    body = {"model": CHAT, "messages": messages, "temperature": 0, "max_tokens": TOKENS}
    answer: dict[str, Any] = target.post("/v1/chat/completions", body).json()
    return answer


def check_response(response: dict[str, Any], text: str) -> None:
    """A finished response whose one message says `text`, with usage that adds up."""
    assert keys(response) == shapes.RESPONSE
    assert (response["object"], response["model"]) == ("response", CHAT)
    assert response["id"].startswith("resp_")
    [item] = response["output"]
    assert keys(item) == shapes.RESPONSE_ITEM
    assert (item["type"], item["role"], item["status"]) == ("message", "assistant", "completed")
    [part] = item["content"]
    assert keys(part) == shapes.RESPONSE_PART
    assert (part["type"], part["text"]) == ("output_text", text)
    usage = response["usage"]
    assert keys(usage) == shapes.RESPONSE_USAGE
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    ran_out = usage["output_tokens"] == TOKENS
    assert response["status"] == ("incomplete" if ran_out else "completed")
    if ran_out:
        assert response["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_response_says_what_the_chat_says(target: Target) -> None:
    reply = respond(target)

    assert (reply.status, reply.content_type) == (200, "application/json")
    chat = chat_answer(target)
    check_response(reply.json(), chat["choices"][0]["message"]["content"])
    usage = reply.json()["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (
        chat["usage"]["prompt_tokens"],
        chat["usage"]["completion_tokens"],
    )


def test_a_response_stream_is_named_numbered_events_without_done(target: Target) -> None:
    whole = respond(target).json()
    reply = respond(target, stream=True)

    assert (reply.status, reply.content_type) == (200, "text/event-stream")
    events = reply.events()
    names = [event.name for event in events]
    deltas = names.count("response.output_text.delta")
    assert deltas > 0
    assert names == [
        *shapes.RESPONSE_EVENTS_BEFORE,
        *["response.output_text.delta"] * deltas,
        *shapes.RESPONSE_EVENTS_AFTER,
    ]
    payloads = [event.json() for event in events]  # no `data: [DONE]` here
    assert [p["sequence_number"] for p in payloads] == list(range(len(events)))
    assert [p["type"] for p in payloads] == names
    assert payloads[0]["response"]["status"] == "in_progress"
    text = whole["output"][0]["content"][0]["text"]
    assert "".join(p["delta"] for p in payloads if "delta" in p) == text
    check_response(payloads[-1]["response"], text)
