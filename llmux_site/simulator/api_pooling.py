"""The pooling runner's routes: /v1/embeddings, /v1/score and /v1/rerank (vLLM 0.32's shapes,
seen with its CPU build serving a model with `--runner pooling --convert embed`)."""

from __future__ import annotations

import base64
import math
import struct
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from llmux_site.simulator import fields, textgen
from llmux_site.simulator.api_control import engine_of
from llmux_site.simulator.api_openai import not_served, resolve_model
from llmux_site.simulator.engine import Engine
from llmux_site.simulator.errors import ApiError, RequestAborted, validation_error
from llmux_site.simulator.generation import new_id, usage
from llmux_site.simulator.sampling import check_prompt_length

routes = web.RouteTableDef()
ENCODINGS = ("float", "base64", "bytes", "bytes_only")


def _embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, list) and not value:
        raise ApiError(400, "You must pass at least one prompt")
    if isinstance(value, str):
        inputs = [value]
    elif isinstance(value, list) and all(isinstance(v, int) for v in value):
        inputs = [textgen.detokenize(value)]
    elif isinstance(value, list) and all(isinstance(v, str | list) for v in value):
        inputs = [v if isinstance(v, str) else textgen.detokenize(v) for v in value]
    else:
        raise validation_error("input", "string_type", "Input should be a valid string", value)
    if any(not text for text in inputs):
        raise ApiError(400, "The decoder prompt cannot be empty")
    return inputs


def _check_embedding(engine: Engine, model: str, body: dict[str, Any], tokens: int) -> None:
    """What vLLM 0.32's pooling runner refuses, in its words (seen with its CPU build)."""
    dimensions = body.get("dimensions")
    if dimensions is not None:
        raise ApiError(
            400,
            f"Model '{model}' does not support Matryoshka embeddings; dimensions must be "
            f"unset (received dimensions={dimensions}).",
        )
    check_prompt_length(engine.config.max_model_len, tokens)


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


async def _embed_all(engine: Engine, texts: Sequence[str]) -> list[list[float]]:
    """One vector per text, as one admitted request."""
    ticket = engine.admit()
    try:
        vectors = []
        for text in texts:
            key = textgen.request_key(
                seed=engine.config.seed, prompt=text, temperature=0, request_seed=None
            )
            vectors.append(await engine.embed(ticket, key, textgen.EMBEDDING_DIM))
        return vectors
    except RequestAborted as exc:
        raise ApiError(503, str(exc)) from None
    finally:
        engine.inflight.release(ticket)


def _envelope(prefix: str, model: str, kind: str | None = "list") -> dict[str, Any]:
    head: dict[str, Any] = {"id": new_id(prefix)}
    if kind is not None:
        head |= {"object": kind, "created": int(time.time())}
    return head | {"model": model}


@routes.post("/v1/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    engine = engine_of(request)
    if (absent := not_served(engine, "pooling")) is not None:
        return absent
    body = await fields.openai_body(request)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ENCODINGS:
        message = "Input should be 'float', 'base64', 'bytes' or 'bytes_only'"
        raise validation_error("encoding_format", "literal_error", message, encoding)
    model = resolve_model(engine, body, aliases=False)
    inputs = _embedding_inputs(body.get("input"))
    tokens = [textgen.count_tokens(text) for text in inputs]
    _check_embedding(engine, model, body, max(tokens))
    vectors = await _embed_all(engine, inputs)
    data = [
        {"index": index, "object": "embedding", "embedding": _encode(vector, encoding)}
        for index, vector in enumerate(vectors)
    ]
    counts = usage(sum(tokens), 0, details=True)
    return web.json_response({**_envelope("embd", model), "data": data, "usage": counts})


def _texts(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return value
    raise validation_error(name, "string_type", "Input should be a valid string", value)


def _cosine(first: Sequence[float], second: Sequence[float]) -> float:
    # Both are unit vectors: their dot product is the cosine, vLLM's score for an
    # embedding model.
    return math.fsum(a * b for a, b in zip(first, second, strict=True))


def _pairs(queries: list[str], documents: list[str]) -> list[str]:
    """The query of each document: one query for all, or one each."""
    if len(queries) == 1:
        return queries * len(documents)
    if len(queries) != len(documents):
        raise ApiError(400, "text_1 and text_2 must have the same number of items")
    return queries


async def _scores(engine: Engine, queries: list[str], documents: list[str]) -> list[float]:
    """One score per (query, document) pair."""
    for text in queries + documents:
        check_prompt_length(engine.config.max_model_len, textgen.count_tokens(text))
    vectors = await _embed_all(engine, queries + documents)
    return [_cosine(vectors[i], vectors[len(queries) + i]) for i in range(len(documents))]


def _pair_tokens(queries: list[str], documents: list[str]) -> int:
    return sum(textgen.count_tokens(text) for text in queries + documents)


@routes.post("/v1/score")
@routes.post("/score")
async def score(request: web.Request) -> web.Response:
    engine = engine_of(request)
    if (absent := not_served(engine, "pooling")) is not None:
        return absent
    body = await fields.openai_body(request)
    model = resolve_model(engine, body, aliases=False)
    documents = _texts(body, "text_2")
    queries = _pairs(_texts(body, "text_1"), documents)
    scores = await _scores(engine, queries, documents)
    data = [{"index": i, "object": "score", "score": value} for i, value in enumerate(scores)]
    counts = usage(_pair_tokens(queries, documents), 0, details=True)
    return web.json_response({**_envelope("score", model), "data": data, "usage": counts})


@routes.post("/v1/rerank")
@routes.post("/rerank")
async def rerank(request: web.Request) -> web.Response:
    engine = engine_of(request)
    if (absent := not_served(engine, "pooling")) is not None:
        return absent
    body = await fields.openai_body(request)
    model = resolve_model(engine, body, aliases=False)
    documents = _texts(body, "documents")
    queries = _pairs(_texts(body, "query"), documents)
    top_n = fields.integer(body, "top_n") or len(documents)
    scores = await _scores(engine, queries, documents)
    ranked = sorted(enumerate(scores), key=lambda pair: pair[1], reverse=True)[:top_n]
    results = [
        {
            "index": index,
            "document": {"text": documents[index], "multi_modal": None},
            "relevance_score": value,
        }
        for index, value in ranked
    ]
    tokens = _pair_tokens(queries, documents)
    counts = {"prompt_tokens": tokens, "total_tokens": tokens}
    return web.json_response(
        {**_envelope("score", model, None), "usage": counts, "results": results}
    )
