"""The embedding model (vLLM's pooling runner): /v1/embeddings, /v1/score and /v1/rerank,
against both engines, directly and through llmux's gateway."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import pytest

from tests.conformance import shapes
from tests.conformance.client import Reply
from tests.conformance.shapes import keys
from tests.conformance.stack import CHAT, EMBED, Target

# The first scenario of each engine kind starts it: a real vLLM pair takes about a minute
# here (more on a loaded machine, plus its install the first time).
pytestmark = pytest.mark.timeout(900)

TEXTS = ["hello there", "general kenobi"]


def embed(target: Target, value: Any, **extra: Any) -> Reply:
    return target.post("/v1/embeddings", {"model": EMBED, "input": value} | extra)


def vectors(reply: Reply) -> list[list[float]]:
    assert reply.status == 200, reply
    return [item["embedding"] for item in reply.json()["data"]]


def token_count(target: Target, text: str) -> int:
    count: int = target.post("/tokenize", {"model": EMBED, "prompt": text}).json()["count"]
    return count


def test_embeddings_are_unit_vectors_one_per_input_and_counted(target: Target) -> None:
    reply = embed(target, TEXTS)

    assert (reply.status, reply.content_type) == (200, "application/json")
    body = reply.json()
    assert keys(body) == shapes.EMBEDDINGS
    assert (body["object"], body["model"]) == ("list", EMBED)
    assert body["id"].startswith("embd-")
    assert [(item["index"], item["object"]) for item in body["data"]] == [
        (0, "embedding"),
        (1, "embedding"),
    ]
    assert all(keys(item) == shapes.EMBEDDING for item in body["data"])
    first, second = vectors(reply)
    assert len(first) == len(second) > 0 and first != second
    for vector in (first, second):
        assert math.isclose(math.fsum(v * v for v in vector), 1.0, abs_tol=1e-4)
    assert vectors(embed(target, TEXTS[1])) == [second]  # one input alone: the same vector
    assert keys(body["usage"]) == shapes.USAGE
    counted = sum(token_count(target, text) for text in TEXTS)
    assert (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"]) == (counted, 0)
    assert body["usage"]["total_tokens"] == counted


def test_base64_embeddings_hold_the_same_floats(target: Target) -> None:
    [vector] = vectors(embed(target, TEXTS[0]))
    [encoded] = vectors(embed(target, TEXTS[0], encoding_format="base64"))

    assert isinstance(encoded, str)
    decoded = struct.unpack(f"<{len(vector)}f", base64.b64decode(encoded))
    assert max(abs(a - b) for a, b in zip(decoded, vector, strict=True)) < 1e-6


def test_an_embedding_model_scores_and_ranks_by_cosine(target: Target) -> None:
    query, documents = "hello", TEXTS
    [asked, *vectors_of] = vectors(embed(target, [query, *documents]))
    cosines = [math.fsum(a * b for a, b in zip(asked, v, strict=True)) for v in vectors_of]

    scored = target.post("/v1/score", {"model": EMBED, "text_1": query, "text_2": documents})
    assert scored.status == 200, scored
    assert keys(scored.json()) == shapes.SCORE
    scores = [(item["index"], item["object"], item["score"]) for item in scored.json()["data"]]
    assert [(index, kind) for index, kind, _score in scores] == [(0, "score"), (1, "score")]
    for (_index, _kind, score), cosine in zip(scores, cosines, strict=True):
        assert math.isclose(score, cosine, abs_tol=1e-4)

    body = {"model": EMBED, "query": query, "documents": documents}
    ranked = target.post("/v1/rerank", body)
    assert ranked.status == 200, ranked
    assert keys(ranked.json()) == shapes.RERANK
    results = ranked.json()["results"]
    best_first = sorted(range(len(documents)), key=lambda i: cosines[i], reverse=True)
    assert [result["index"] for result in results] == best_first
    assert [result["document"]["text"] for result in results] == [documents[i] for i in best_first]


def test_what_the_pooling_runner_refuses(target: Target) -> None:
    for value, extra in [([], {}), ("hi", {"dimensions": 8})]:
        reply = embed(target, value, **extra)
        error = shapes.openai_error(reply.json(), 400)
        assert (error["type"], error["param"]) == ("BadRequestError", None)
    chat_model = target.post("/v1/score", {"model": CHAT, "text_1": "a", "text_2": "b"})
    assert chat_model.status == 404  # a generation model serves no scores
