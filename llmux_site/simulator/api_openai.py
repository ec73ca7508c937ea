"""OpenAI-compatible routes: /v1/models, /v1/completions, /v1/chat/completions, /v1/embeddings."""

from __future__ import annotations

import base64
import functools
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmux_site.simulator import textgen
from llmux_site.simulator.api_control import engine_of, json_body
from llmux_site.simulator.engine import Engine
from llmux_site.simulator.errors import ApiError, RequestAborted, error_body

routes = web.RouteTableDef()
DEFAULT_MAX_TOKENS = 16

ChunkMaker = Callable[[str, str | None], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Sampling:
    """The generation parameters of one request, validated."""

    max_tokens: int
    temperature: float
    seed: int | None
    stream: bool
    include_usage: bool


def _number(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ApiError(400, f"{name} must be a non-negative number", param=name)
    return float(value)


def parse_sampling(body: dict[str, Any], *, token_keys: tuple[str, ...]) -> Sampling:
    max_tokens: Any = next((body[k] for k in token_keys if body.get(k) is not None), None)
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ApiError(400, "max_tokens must be a positive integer", param="max_tokens")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ApiError(400, "seed must be an integer", param="seed")
    options = body.get("stream_options") or {}
    return Sampling(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0),
        seed=seed,
        stream=bool(body.get("stream", False)),
        include_usage=isinstance(options, dict) and bool(options.get("include_usage")),
    )


def resolve_model(engine: Engine, body: dict[str, Any]) -> str:
    """The served name the request asks for (default: the first); 404 for any other model."""
    model = body.get("model")
    if model is None:
        return engine.config.model_name
    if model not in engine.config.served_model_names:
        raise ApiError(404, f"The model `{model}` does not exist.", param="model")
    return str(model)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _check_length(engine: Engine, prompt_tokens: int, sampling: Sampling) -> None:
    limit = engine.config.max_model_len
    if prompt_tokens + sampling.max_tokens > limit:
        raise ApiError(
            400,
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + sampling.max_tokens} tokens ({prompt_tokens} in the messages, "
            f"{sampling.max_tokens} in the completion).",
            param="max_tokens",
        )


def _key(engine: Engine, prompt: str, sampling: Sampling) -> bytes:
    return textgen.request_key(
        seed=engine.config.seed,
        prompt=prompt,
        temperature=sampling.temperature,
        request_seed=sampling.seed,
    )


@dataclass(frozen=True, slots=True)
class ReplyShape:
    """How one endpoint shapes its answer: streamed chunks, or one body with one choice."""

    envelope: dict[str, Any]
    chunk: ChunkMaker
    choice: Callable[[str], dict[str, Any]]
    first_chunk: dict[str, Any] | None = None


class SseStream:
    """Server-sent events, one `data:` line per chunk, each written and flushed on its own."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )

    async def open(self) -> None:
        await self.response.prepare(self._request)

    async def send(self, payload: dict[str, Any]) -> None:
        await self.response.write(b"data: " + json.dumps(payload).encode() + b"\n\n")

    async def finish(self) -> web.StreamResponse:
        await self.response.write(b"data: [DONE]\n\n")
        await self.response.write_eof()
        return self.response


async def _stream(
    request: web.Request,
    words: AsyncIterator[str],
    shape: ReplyShape,
    usage: Callable[[int], dict[str, int]] | None,
) -> web.StreamResponse:
    stream = SseStream(request)
    await stream.open()  # headers at once; the first event waits for the first token
    first = shape.first_chunk
    count = 0
    try:
        async for word in words:
            if first is not None:
                # As vLLM: the role chunk goes out with the first output of the engine
                # (after the response delay), so a stream's first byte is its first token.
                await stream.send(first)
                first = None
            await stream.send(shape.chunk(word if count == 0 else " " + word, None))
            count += 1
        if first is not None:
            await stream.send(first)
        await stream.send(shape.chunk("", "length"))
        if usage is not None:
            await stream.send({**shape.chunk("", None), "choices": [], "usage": usage(count)})
    except RequestAborted as exc:
        await stream.send(error_body(503, str(exc)))
    return await stream.finish()


async def _run(
    request: web.Request,
    prompt: str,
    prompt_tokens: int,
    sampling: Sampling,
    shape: ReplyShape,
) -> web.StreamResponse:
    """Admit the request, generate, and answer as one JSON body or as an SSE stream."""
    engine = engine_of(request)
    ticket = engine.admit()
    engine.usage["prompt_tokens"] += prompt_tokens
    words = engine.generate(ticket, _key(engine, prompt, sampling), sampling.max_tokens)
    try:
        if sampling.stream:
            usage = None
            if sampling.include_usage:
                usage = functools.partial(_usage, prompt_tokens)
            return await _stream(request, words, shape, usage)
        try:
            text = textgen.join_tokens([word async for word in words])
        except RequestAborted as exc:
            raise ApiError(503, str(exc)) from None
        body = {
            **shape.envelope,
            "choices": [shape.choice(text)],
            "usage": _usage(prompt_tokens, sampling.max_tokens),
        }
        return web.json_response(body)
    finally:
        engine.inflight.release(ticket)


def _envelope(kind: str, model: str) -> dict[str, Any]:
    prefix = {"text_completion": "cmpl", "chat.completion": "chatcmpl"}.get(kind, "embd")
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
    }


@routes.get("/v1/models")
async def models(request: web.Request) -> web.Response:
    config = engine_of(request).config
    created = int(time.time())
    data: list[dict[str, Any]] = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": config.model_path,
            "parent": None,
            "max_model_len": config.max_model_len,
            "permission": [],
        }
        for name in config.served_model_names
    ]
    return web.json_response({"object": "list", "data": data})


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    if (absent := _not_served(engine, "generate")) is not None:
        return absent
    body = await json_body(request)
    model = resolve_model(engine, body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string (or a list of one string)", param="prompt")
    sampling = parse_sampling(body, token_keys=("max_tokens",))
    prompt_tokens = textgen.count_tokens(prompt)
    _check_length(engine, prompt_tokens, sampling)
    envelope = _envelope("text_completion", model)

    def choice(text: str, finish: str | None = "length") -> dict[str, Any]:
        return {
            "index": 0,
            "text": text,
            "logprobs": None,
            "finish_reason": finish,
            "stop_reason": None,
        }

    def chunk(text: str, finish: str | None) -> dict[str, Any]:
        return {**envelope, "choices": [choice(text, finish)]}

    shape = ReplyShape(envelope, chunk, choice)
    return await _run(request, prompt, prompt_tokens, sampling, shape)


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    if (absent := _not_served(engine, "generate")) is not None:
        return absent
    body = await json_body(request)
    model = resolve_model(engine, body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "messages must be a list of objects", param="messages")
    if not messages:
        raise ApiError(400, "messages must not be empty", param="messages")
    sampling = parse_sampling(body, token_keys=("max_completion_tokens", "max_tokens"))
    prompt_tokens = textgen.chat_prompt_tokens(messages)
    _check_length(engine, prompt_tokens, sampling)
    envelope = _envelope("chat.completion", model)
    chunk_envelope = {**envelope, "object": "chat.completion.chunk"}

    def delta_chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**chunk_envelope, "choices": [choice]}

    def chunk(text: str, finish: str | None) -> dict[str, Any]:
        return delta_chunk({"content": text} if finish is None else {}, finish)

    def choice(text: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": text, "tool_calls": []}
        return {"index": 0, "message": message, "logprobs": None, "finish_reason": "length"}

    first = delta_chunk({"role": "assistant", "content": ""}, None)
    shape = ReplyShape(envelope, chunk, choice, first_chunk=first)
    prompt = textgen.chat_prompt(messages)
    return await _run(request, prompt, prompt_tokens, sampling, shape)


def _not_served(engine: Engine, runner: str) -> web.Response | None:
    """vLLM registers the routes of its runner only: the other runner's are absent, and
    FastAPI answers an absent route with this 404 (not OpenAI's error shape)."""
    if engine.config.runner in ("auto", runner):
        return None
    return web.json_response({"detail": "Not Found"}, status=404)


def _embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, list) and not value:
        raise ApiError(400, "You must pass at least one prompt")
    if isinstance(value, str):
        inputs = [value]
    elif isinstance(value, list) and all(isinstance(v, int) for v in value):
        inputs = [" ".join(map(str, value))]
    elif isinstance(value, list) and all(isinstance(v, str | list) for v in value):
        inputs = [v if isinstance(v, str) else " ".join(map(str, v)) for v in value]
    else:
        raise ApiError(
            400, "input must be a string or a list of strings or token ids", param="input"
        )
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
    limit = engine.config.max_model_len
    if tokens > limit:
        raise ApiError(
            400,
            f"This model's maximum context length is {limit} tokens. However, your prompt "
            f"contains at least {limit + 1} input tokens, which exceeds this limit even "
            "without any output tokens. Please reduce the length of the input prompt. "
            f"(parameter=input_tokens, value={limit + 1})",
            param="input_tokens",
        )


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


@routes.post("/v1/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    engine = engine_of(request)
    if (absent := _not_served(engine, "pooling")) is not None:
        return absent
    body = await json_body(request)
    try:
        model = resolve_model(engine, body)
    except ApiError as exc:  # vLLM's pooling routes name no param for an unknown model
        raise ApiError(exc.status, exc.message) from None
    inputs = _embedding_inputs(body.get("input"))
    tokens = [textgen.count_tokens(text) for text in inputs]
    _check_embedding(engine, model, body, max(tokens))
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(400, "encoding_format must be float or base64", param="encoding_format")
    ticket = engine.admit()
    try:
        data: list[dict[str, Any]] = []
        for index, text in enumerate(inputs):
            key = textgen.request_key(
                seed=engine.config.seed, prompt=text, temperature=0, request_seed=None
            )
            vector = await engine.embed(ticket, key, textgen.EMBEDDING_DIM)
            data.append(
                {"index": index, "object": "embedding", "embedding": _encode(vector, encoding)}
            )
    except RequestAborted as exc:
        raise ApiError(503, str(exc)) from None
    finally:
        engine.inflight.release(ticket)
    usage = {
        "prompt_tokens": sum(tokens),
        "total_tokens": sum(tokens),
        "completion_tokens": 0,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    return web.json_response({**_envelope("list", model), "data": data, "usage": usage})
