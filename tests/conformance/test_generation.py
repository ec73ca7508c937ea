"""Chat and text completions, streamed or not, and /tokenize and /detokenize: the same
scenarios against the simulator and a real vLLM, directly and through llmux's gateway."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance import shapes
from tests.conformance.client import Event, Reply
from tests.conformance.shapes import keys
from tests.conformance.stack import CHAT, EMBED, MAX_MODEL_LEN, Target

# The first scenario of each engine kind starts it: a real vLLM pair takes about a minute
# here (more on a loaded machine, plus its install the first time).
pytestmark = pytest.mark.timeout(900)

MESSAGES = [{"role": "user", "content": "hello there"}]
PROMPT = "hello there"
TOKENS = 5


def completion(target: Target, **extra: Any) -> Reply:
    body = {"model": CHAT, "prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0} | extra
    return target.post("/v1/completions", body)


def chat(target: Target, **extra: Any) -> Reply:
    body = {"model": CHAT, "messages": MESSAGES, "max_tokens": TOKENS, "temperature": 0} | extra
    return target.post("/v1/chat/completions", body)


def tokenize(target: Target, **body: Any) -> dict[str, Any]:
    reply = target.post("/tokenize", {"model": CHAT} | body)
    assert reply.status == 200, reply
    answer: dict[str, Any] = reply.json()
    return answer


def check_usage(usage: dict[str, Any], *, prompt: int, finish: str, wanted: int) -> None:
    """Counts that add up; all `wanted` tokens when the choice ran out of them."""
    assert keys(usage) == shapes.USAGE
    assert usage["prompt_tokens"] == prompt
    assert 0 < usage["completion_tokens"] <= wanted
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert finish in ("length", "stop")
    assert (usage["completion_tokens"] == wanted) == (finish == "length")


def test_a_completion_at_temperature_zero_is_repeatable_and_counted(target: Target) -> None:
    first, again = completion(target), completion(target)

    assert (first.status, first.content_type) == (200, "application/json")
    body = first.json()
    assert keys(body) == shapes.COMPLETION
    assert (body["object"], body["model"]) == ("text_completion", CHAT)
    assert body["id"].startswith("cmpl-") and isinstance(body["created"], int)
    [choice] = body["choices"]
    assert keys(choice) == shapes.COMPLETION_CHOICE and choice["index"] == 0
    assert isinstance(choice["text"], str) and choice["text"]
    assert choice["text"] == again.json()["choices"][0]["text"]
    prompt_tokens = tokenize(target, prompt=PROMPT)["count"]
    check_usage(body["usage"], prompt=prompt_tokens, finish=choice["finish_reason"], wanted=TOKENS)


def test_a_chat_at_temperature_zero_is_repeatable_and_counted(target: Target) -> None:
    first, again = chat(target), chat(target)

    assert (first.status, first.content_type) == (200, "application/json")
    body = first.json()
    assert keys(body) == shapes.CHAT
    assert (body["object"], body["model"]) == ("chat.completion", CHAT)
    assert body["id"].startswith("chatcmpl-")
    [choice] = body["choices"]
    assert keys(choice) == shapes.CHAT_CHOICE
    message = choice["message"]
    assert keys(message) == shapes.MESSAGE and message["role"] == "assistant"
    assert isinstance(message["content"], str) and message["content"]
    assert message["content"] == again.json()["choices"][0]["message"]["content"]
    # The chat's prompt is its template applied to the messages, as /tokenize counts them.
    prompt_tokens = tokenize(target, messages=MESSAGES)["count"]
    check_usage(body["usage"], prompt=prompt_tokens, finish=choice["finish_reason"], wanted=TOKENS)


def test_a_completion_of_several_prompts_answers_each_in_order(target: Target) -> None:
    prompts = [PROMPT, "general kenobi"]
    body = completion(target, prompt=prompts, max_tokens=2).json()

    assert [choice["index"] for choice in body["choices"]] == [0, 1]
    alone = completion(target, prompt=prompts[1], max_tokens=2).json()
    assert body["choices"][1]["text"] == alone["choices"][0]["text"]
    counted = sum(tokenize(target, prompt=prompt)["count"] for prompt in prompts)
    assert body["usage"]["prompt_tokens"] == counted


def test_a_budget_that_overflows_the_context_is_cut_to_what_is_left(target: Target) -> None:
    prompt_tokens = tokenize(target, prompt=PROMPT)["count"]
    reply = completion(target, max_tokens=MAX_MODEL_LEN - 2)

    assert reply.status == 200, reply
    body = reply.json()
    check_usage(
        body["usage"],
        prompt=prompt_tokens,
        finish=body["choices"][0]["finish_reason"],
        wanted=MAX_MODEL_LEN - prompt_tokens,
    )


def stream_chunks(reply: Reply) -> list[dict[str, Any]]:
    """A stream's chunks, checked to be plain `data:` events ending with `data: [DONE]`."""
    assert (reply.status, reply.content_type) == (200, "text/event-stream"), reply
    events = reply.events()
    assert events[-1] == Event(None, "[DONE]")
    assert all(event.name is None for event in events)
    return [event.json() for event in events[:-1]]


def check_stream_end(chunks: list[dict[str, Any]], *, include_usage: bool, usage: Any) -> None:
    """The finish reason rides on the last token's chunk; then, if asked, a usage chunk;
    `system_fingerprint` on the very last."""
    choice_chunks = [chunk for chunk in chunks if chunk["choices"]]
    finishes = [chunk["choices"][0]["finish_reason"] for chunk in choice_chunks]
    assert finishes[:-1] == [None] * (len(finishes) - 1) and finishes[-1] in ("length", "stop")
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert "system_fingerprint" in chunks[-1]
    if not include_usage:
        assert chunks[-1] is choice_chunks[-1]
        assert all("usage" not in chunk for chunk in chunks)
        return
    *_, last = chunks
    assert keys(last) == shapes.CHUNK | {"usage", "system_fingerprint"} and last["choices"] == []
    assert keys(last["usage"]) == shapes.STREAM_USAGE
    assert last["usage"] == {name: usage[name] for name in shapes.STREAM_USAGE}
    assert all("usage" not in chunk for chunk in chunks[:-1])


@pytest.mark.parametrize("include_usage", [False, True], ids=["no-usage", "usage"])
def test_a_completion_stream_says_what_the_answer_says(target: Target, include_usage: bool) -> None:
    whole = completion(target, max_tokens=3).json()
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = stream_chunks(completion(target, max_tokens=3, stream=True, **options))

    texts = []
    for chunk in (chunk for chunk in chunks if chunk["choices"]):
        assert keys(chunk) - {"system_fingerprint"} == shapes.CHUNK
        assert chunk["object"] == "text_completion"
        [choice] = chunk["choices"]
        assert keys(choice) == shapes.COMPLETION_CHUNK_CHOICE
        texts.append(choice["text"])
    assert "".join(texts) == whole["choices"][0]["text"]
    check_stream_end(chunks, include_usage=include_usage, usage=whole["usage"])


@pytest.mark.parametrize("include_usage", [False, True], ids=["no-usage", "usage"])
def test_a_chat_stream_opens_with_the_role_and_says_what_the_answer_says(
    target: Target, include_usage: bool
) -> None:
    whole = chat(target, max_tokens=3).json()
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = stream_chunks(chat(target, max_tokens=3, stream=True, **options))

    opening, *rest = chunks
    assert keys(opening) == shapes.CHAT_ROLE_CHUNK
    assert opening["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    texts = []
    for chunk in (chunk for chunk in rest if chunk["choices"]):
        assert keys(chunk) - {"system_fingerprint"} == shapes.CHUNK
        assert chunk["object"] == "chat.completion.chunk"
        [choice] = chunk["choices"]
        ends = {"stop_reason"} if choice["finish_reason"] else set()
        assert keys(choice) == shapes.CHAT_CHUNK_CHOICE | ends
        assert keys(choice["delta"]) == {"content"}
        texts.append(choice["delta"]["content"])
    assert "".join(texts) == whole["choices"][0]["message"]["content"]
    check_stream_end(chunks, include_usage=include_usage, usage=whole["usage"])


def test_tokenize_and_detokenize_go_both_ways(target: Target) -> None:
    tokens = tokenize(target, prompt=PROMPT)

    assert keys(tokens) == shapes.TOKENIZE
    assert tokens["count"] == len(tokens["tokens"]) > 0
    assert all(isinstance(token, int) for token in tokens["tokens"])
    assert (tokens["max_model_len"], tokens["token_strs"]) == (MAX_MODEL_LEN, None)
    named = tokenize(target, prompt=PROMPT, return_token_strs=True)
    assert len(named["token_strs"]) == named["count"]
    assert all(isinstance(piece, str) for piece in named["token_strs"])
    back = target.post("/detokenize", {"model": CHAT, "tokens": tokens["tokens"]})
    assert back.status == 200 and back.json() == {"prompt": PROMPT}
    # An embedding model of the same weights has the same tokenizer, and serves it too.
    assert tokenize(target, model=EMBED, prompt=PROMPT)["tokens"] == tokens["tokens"]
