"""The OpenAI-compatible surface: shapes, usage, errors, streaming pace, determinism."""

from __future__ import annotations

import base64
import json
import struct
import time
from typing import Any

import aiohttp
import openai
import pytest

from tests.simulator.harness import SimEngine, SimLauncher

CHAT = {"messages": [{"role": "user", "content": "tell me about rivers"}], "max_tokens": 6}


def test_v1_models_lists_every_served_name(sim: SimLauncher) -> None:
    engine = sim.start(
        "--served-model-name", "tiny", "tiny-alias", "--max-model-len", "2048", model="/m/tiny"
    )
    listing = engine.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["tiny", "tiny-alias"]
    for card in listing["data"]:
        assert card["object"] == "model"
        assert (card["root"], card["max_model_len"], card["owned_by"]) == ("/m/tiny", 2048, "vllm")
    for name in ("tiny", "tiny-alias"):
        reply = engine.post("/v1/completions", {"model": name, "prompt": "hi", "max_tokens": 2})
        assert (reply.status, reply.json()["model"]) == (200, name)


def test_the_model_path_is_the_default_name(sim: SimLauncher) -> None:
    engine = sim.start(model="org/some-model")
    assert [m["id"] for m in engine.get("/v1/models").json()["data"]] == ["org/some-model"]


def test_a_wrong_model_is_a_404_openai_error(sim: SimLauncher) -> None:
    engine = sim.start()
    named = "The model `nope` does not exist. Valid aliases: llmux-sim/test."
    for path, body, message, param in [
        ("/v1/completions", {"model": "nope", "prompt": "hi"}, named, "model"),
        ("/v1/chat/completions", {**CHAT, "model": "nope"}, named, "model"),
        # as vLLM 0.32's pooling routes answer: no names, no param
        ("/v1/embeddings", {"model": "nope", "input": "hi"}, named.split(" Valid")[0], None),
    ]:
        reply = engine.post(path, body)
        assert reply.status == 404
        assert reply.json() == {
            "error": {"message": message, "type": "NotFoundError", "param": param, "code": 404}
        }


def test_a_completion_has_openai_shape_and_usage(sim: SimLauncher) -> None:
    engine = sim.start()
    body = engine.post("/v1/completions", {"prompt": "one two three", "max_tokens": 5}).json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    [choice] = body["choices"]
    assert (choice["index"], choice["finish_reason"]) == (0, "length")
    assert len(choice["text"].split()) == 5
    assert body["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "total_tokens": 8,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }


def test_max_tokens_defaults_to_16(sim: SimLauncher) -> None:
    engine = sim.start()
    body = engine.post("/v1/completions", {"prompt": "hi"}).json()
    assert body["usage"]["completion_tokens"] == 16
    assert len(body["choices"][0]["text"].split()) == 16


def test_a_chat_completion_has_openai_shape_and_usage(sim: SimLauncher) -> None:
    engine = sim.start()
    body = engine.post("/v1/chat/completions", CHAT).json()
    assert body["object"] == "chat.completion"
    [choice] = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 6
    assert (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]) == (4, 6)
    assert body["usage"]["total_tokens"] == 10


def test_embeddings_have_openai_shape_and_usage(sim: SimLauncher) -> None:
    engine = sim.start()
    body = engine.post("/v1/embeddings", {"input": ["a b", "c"]}).json()
    # vLLM 0.32's pooling runner answers with these keys, in this order.
    assert list(body) == ["id", "object", "created", "model", "data", "usage"]
    assert body["id"].startswith("embd-") and body["object"] == "list"
    assert [(d["index"], d["object"]) for d in body["data"]] == [(0, "embedding"), (1, "embedding")]
    vector = body["data"][0]["embedding"]
    assert len(vector) == 64
    assert abs(sum(v * v for v in vector) - 1) < 1e-6
    assert body["usage"] == {
        "prompt_tokens": 3,
        "total_tokens": 3,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    again = engine.post("/v1/embeddings", {"input": "a b", "encoding_format": "base64"}).json()
    decoded = struct.unpack("<64f", base64.b64decode(again["data"][0]["embedding"]))
    assert max(abs(a - b) for a, b in zip(decoded, vector, strict=True)) < 1e-6


def test_the_pooling_runner_serves_embeddings_and_no_completions_as_vllm_does(
    sim: SimLauncher,
) -> None:
    pooling = sim.start("--runner", "pooling", model="sim/embed")
    converted = sim.start("--convert", "embed", model="sim/embed")
    generate = sim.start("--runner", "generate")

    for engine in (pooling, converted):
        assert engine.post("/v1/embeddings", {"input": "hi"}).status == 200
        for path, body in [("/v1/completions", {"prompt": "hi"}), ("/v1/chat/completions", CHAT)]:
            reply = engine.post(path, body)
            assert (reply.status, reply.json()) == (404, {"detail": "Not Found"})
    reply = generate.post("/v1/embeddings", {"input": "hi"})
    assert (reply.status, reply.json()) == (404, {"detail": "Not Found"})
    assert generate.post("/v1/completions", {"prompt": "hi"}).status == 200


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        (
            {"input": "hi", "dimensions": 8},
            "Model 'sim/embed' does not support Matryoshka embeddings; dimensions must be "
            "unset (received dimensions=8).",
            None,
        ),
        ({"input": ""}, "The decoder prompt cannot be empty", None),
        ({"input": []}, "You must pass at least one prompt", None),
        (
            {"input": "word " * 600},
            "This model's maximum context length is 512 tokens. However, your prompt contains "
            "at least 513 input tokens, which exceeds this limit even without any output "
            "tokens. Please reduce the length of the input prompt. "
            "(parameter=input_tokens, value=513)",
            "input_tokens",
        ),
    ],
)
def test_embedding_requests_vllm_refuses_are_refused_in_its_words(
    sim: SimLauncher, body: dict[str, Any], message: str, param: str | None
) -> None:
    # The answers of vLLM 0.32's pooling runner (CPU build) to the same requests.
    engine = sim.start("--runner", "pooling", "--max-model-len", "512", model="sim/embed")

    reply = engine.post("/v1/embeddings", body)

    assert reply.status == 400
    assert reply.json() == {
        "error": {"message": message, "type": "BadRequestError", "param": param, "code": 400}
    }


def test_temperature_zero_is_deterministic_and_default_sampling_is_not(sim: SimLauncher) -> None:
    engine = sim.start()
    greedy = {"prompt": "same prompt", "max_tokens": 12, "temperature": 0}
    texts = {engine.post("/v1/completions", greedy).json()["choices"][0]["text"] for _ in range(3)}
    assert len(texts) == 1
    sampled = {"prompt": "same prompt", "max_tokens": 12}
    texts = {engine.post("/v1/completions", sampled).json()["choices"][0]["text"] for _ in range(3)}
    assert len(texts) == 3
    seeded = {"prompt": "same prompt", "max_tokens": 12, "temperature": 0.8, "seed": 7}
    texts = {engine.post("/v1/completions", seeded).json()["choices"][0]["text"] for _ in range(3)}
    assert len(texts) == 1


def test_two_engines_of_one_model_answer_alike(sim: SimLauncher) -> None:
    greedy = {"prompt": "same prompt", "max_tokens": 12, "temperature": 0}
    first, second = sim.start(), sim.start()
    texts = [
        e.post("/v1/completions", greedy).json()["choices"][0]["text"] for e in (first, second)
    ]
    assert texts[0] == texts[1]
    other = sim.start(model="another/model")
    assert other.post("/v1/completions", greedy).json()["choices"][0]["text"] != texts[0]


def test_a_request_beyond_max_model_len_is_refused_or_cut_as_vllm_does(sim: SimLauncher) -> None:
    # vLLM 0.32: a prompt or a max_tokens beyond the context is a 400; a max_tokens that
    # only overflows it with the prompt is cut to what is left.
    engine = sim.start("--max-model-len", "10")
    cut = engine.post("/v1/completions", {"prompt": "one two three", "max_tokens": 8})
    assert cut.status == 200
    assert cut.json()["usage"]["completion_tokens"] == 7
    too_long = engine.post("/v1/completions", {"prompt": "word " * 11, "max_tokens": 1})
    assert too_long.status == 400
    assert too_long.json()["error"]["param"] == "input_tokens"
    assert "maximum context length is 10" in too_long.json()["error"]["message"]
    too_many = engine.post("/v1/completions", {"prompt": "one", "max_tokens": 11})
    assert too_many.status == 400
    assert too_many.json()["error"] == {
        "message": "max_tokens=11 cannot be greater than max_model_len=10. Please request "
        "fewer output tokens. (parameter=max_tokens, value=11)",
        "type": "BadRequestError",
        "param": "max_tokens",
        "code": 400,
    }


def test_a_body_that_is_no_object_is_a_400_as_vllm_validation_answers(sim: SimLauncher) -> None:
    engine = sim.start()
    reply = engine.post("/v1/completions", "not an object")
    assert reply.status == 400
    error = reply.json()["error"]
    assert (error["type"], error["param"]) == ("Bad Request", "body")


async def _timed_stream(engine: SimEngine, body: dict[str, object]) -> list[tuple[float, bytes]]:
    """(seconds since the request, event) for every SSE event, as it arrives."""
    url = engine.address.base_url() + "/v1/completions"
    events: list[tuple[float, bytes]] = []
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.post(url, json=body) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            async for line in response.content:
                if line.strip():
                    events.append((time.monotonic() - started, line.strip()))
    return events


async def test_a_stream_arrives_token_by_token_at_the_configured_rate(sim: SimLauncher) -> None:
    engine = sim.start("--sim-tokens-per-sec", "1000")
    body = {
        "prompt": "stream please",
        "max_tokens": 200,
        "temperature": 0,
        "seed": 3,
        "stream": True,
    }
    events = await _timed_stream(engine, body)
    assert events[-1][1] == b"data: [DONE]"
    chunks = [json.loads(line[len(b"data: ") :]) for _, line in events[:-1]]
    tokens = [c["choices"][0]["text"] for c in chunks]
    assert len(tokens) == 200
    first_token_at, last_token_at = events[0][0], events[199][0]
    # Incremental: the first token arrives long before the last (relative, so a loaded
    # machine does not make it flaky); 200 tokens at 1,000/s take at least 0.15 s.
    assert first_token_at < last_token_at / 3, events[:3]
    assert last_token_at >= 0.15
    # As vLLM: the last token's chunk carries the finish reason.
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 199 + ["length"]
    again = await _timed_stream(engine, body)
    assert [line for _, line in again[:200]] != [line for _, line in events[:200]]  # new ids
    texts = [json.loads(line[6:])["choices"][0]["text"] for _, line in again[:200]]
    assert texts == tokens


async def test_a_chat_stream_starts_with_the_role_once_the_first_token_is_due(
    sim: SimLauncher,
) -> None:
    engine = sim.start("--sim-response-delay-ms", "1000")
    body = {**CHAT, "stream": True}
    url = engine.address.base_url() + "/v1/chat/completions"
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.post(url, json=body) as response:
            headers_at = time.monotonic() - started
            first = await response.content.readline()
            first_at = time.monotonic() - started
            await response.read()
    # As vLLM: headers at once, the first event (the role) with the first token only.
    assert headers_at < 1.0 <= first_at
    delta = json.loads(first[len(b"data: ") :])["choices"][0]["delta"]
    assert delta == {"role": "assistant", "content": ""}


def test_the_openai_package_talks_to_the_simulator(sim: SimLauncher) -> None:
    engine = sim.start("--served-model-name", "tiny")
    client = openai.OpenAI(base_url=engine.address.base_url() + "/v1", api_key="unused")
    try:
        chat = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi there"}], max_tokens=5
        )
        assert chat.usage is not None and chat.usage.completion_tokens == 5
        assert len((chat.choices[0].message.content or "").split()) == 5
        pieces: list[str] = []
        usage = None
        for chunk in client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi there"}],
            max_tokens=7,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        ):
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
            if chunk.usage is not None:
                usage = chunk.usage
        assert len("".join(pieces).split()) == 7
        assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (2, 7)
        embedding = client.embeddings.create(model="tiny", input="hello")
        assert len(embedding.data[0].embedding) == 64
        assert [m.id for m in client.models.list()] == ["tiny"]
        try:
            client.completions.create(model="other", prompt="x")
        except openai.NotFoundError as exc:
            assert "does not exist" in str(exc)
        else:
            raise AssertionError("a wrong model must be a 404")
    finally:
        client.close()


def test_version_load_and_metrics(sim: SimLauncher) -> None:
    engine = sim.start()
    assert engine.get("/version").json()["version"].startswith("0.33")
    assert engine.get("/load").json() == {"server_load": 0}
    engine.post("/v1/completions", {"prompt": "a b", "max_tokens": 3})
    metrics = engine.get("/metrics").body.decode()
    assert 'vllm:num_requests_running{model_name="llmux-sim/test"} 0' in metrics
    assert 'vllm:generation_tokens_total{model_name="llmux-sim/test"} 3' in metrics
    engine.post("/sleep?level=1")
    assert 'sleep_state="weights_offloaded"} 1' in engine.get("/metrics").body.decode()
