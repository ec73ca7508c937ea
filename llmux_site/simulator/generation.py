"""Running a generation request on the engine: its choices one after another, answered as
one JSON body or as server-sent events, in the shapes of vLLM 0.32 (seen with its CPU build).

A stream's last choice chunk carries the finish reason together with the last token, and
the event before `data: [DONE]` carries `system_fingerprint`, as vLLM's do.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmux_site.simulator import textgen
from llmux_site.simulator.api_control import engine_of
from llmux_site.simulator.engine import Engine
from llmux_site.simulator.errors import ApiError, RequestAborted, error_body
from llmux_site.simulator.inflight import Ticket
from llmux_site.simulator.sampling import Sampling, fit_to_context

FINISH = "length"  # the simulated model has no end of sequence: every choice runs out


def new_id(prefix: str, separator: str = "-") -> str:
    """An id like vLLM's: a prefix and 16 hexadecimal digits."""
    return f"{prefix}{separator}{uuid.uuid4().hex[:16]}"


def fingerprint(engine: Engine) -> str:
    """vLLM's `system_fingerprint`: its version and a short hash of the build."""
    return f"vllm-{engine.config.vllm_api.version}-{engine.config.seed & 0xFFFFFFFF:08x}"


def usage(prompt_tokens: int, completion_tokens: int, *, details: bool) -> dict[str, Any]:
    """vLLM's usage: with the two empty details in a JSON answer, without them in a stream."""
    counts: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }
    if details:
        counts |= {"prompt_tokens_details": None, "completion_tokens_details": None}
    return counts


@dataclass(frozen=True, slots=True)
class Choice:
    """One sequence to generate: its index in the answer, what it derives from, its length."""

    index: int
    key: bytes
    budget: int


@dataclass(frozen=True, slots=True)
class Plan:
    """The choices of one request and the prompt tokens it is charged."""

    choices: list[Choice]
    prompt_tokens: int


def plan_choices(
    engine: Engine,
    prompts: Sequence[tuple[str, int]],
    sampling: Sampling,
    *,
    name: str = "max_tokens",
) -> Plan:
    """`n` choices per (prompt text, prompt tokens), numbered prompt by prompt as vLLM does;
    `name` is the request's name for its output budget."""
    limit = engine.config.max_model_len
    choices: list[Choice] = []
    for number, (text, tokens) in enumerate(prompts):
        budget = fit_to_context(limit, tokens, sampling.max_tokens, name=name)
        for sample in range(sampling.n):
            key = textgen.request_key(
                seed=engine.config.seed,
                prompt=text,
                temperature=sampling.temperature,
                request_seed=sampling.seed,
                sample=sample,
            )
            choices.append(Choice(number * sampling.n + sample, key, budget))
    return Plan(choices, sum(tokens for _text, tokens in prompts))


class ReplyShape:
    """How one endpoint shapes its answer; subclasses name the pieces."""

    object = ""
    chunk_object = ""
    prefix = ""

    def __init__(self, model: str, system_fingerprint: str) -> None:
        self.id = new_id(self.prefix)
        self.created = int(time.time())
        self.model = model
        self.fingerprint = system_fingerprint

    def envelope(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def role_chunk(self, index: int) -> dict[str, Any] | None:
        """The chunk that opens a choice before its first token, if the endpoint has one."""
        return None

    def chunk(self, index: int, text: str, finish: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def choice(self, index: int, text: str) -> dict[str, Any]:
        raise NotImplementedError

    def body(self, choices: list[dict[str, Any]], counts: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def closing(self, event: dict[str, Any]) -> dict[str, Any]:
        """The stream's last event before `[DONE]`."""
        return {**event, "system_fingerprint": self.fingerprint}

    def usage_chunk(self, counts: dict[str, Any]) -> dict[str, Any]:
        return self.closing({**self.envelope(self.chunk_object), "choices": [], "usage": counts})


class SseStream:
    """Server-sent events, one `data:` line per chunk, each written and flushed on its own."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )

    async def open(self) -> None:
        await self.response.prepare(self._request)

    async def send(self, payload: dict[str, Any], *, event: str | None = None) -> None:
        head = b"event: " + event.encode() + b"\n" if event is not None else b""
        await self.response.write(head + b"data: " + json.dumps(payload).encode() + b"\n\n")

    async def finish(self, *, done: bool = True) -> web.StreamResponse:
        if done:
            await self.response.write(b"data: [DONE]\n\n")
        await self.response.write_eof()
        return self.response


async def run(
    request: web.Request, plan: Plan, sampling: Sampling, shape: ReplyShape
) -> web.StreamResponse:
    """Admit the request, generate every choice, and answer as JSON or as an SSE stream."""
    engine = engine_of(request)
    ticket = engine.admit()
    engine.usage["prompt_tokens"] += plan.prompt_tokens
    try:
        if sampling.stream:
            return await _stream(request, engine, ticket, plan, shape, sampling.include_usage)
        choices = []
        try:
            for choice in plan.choices:
                words = [word async for word in engine.generate(ticket, choice.key, choice.budget)]
                choices.append(shape.choice(choice.index, textgen.join_tokens(words)))
        except RequestAborted as exc:
            raise ApiError(503, str(exc)) from None
        generated = sum(choice.budget for choice in plan.choices)
        counts = usage(plan.prompt_tokens, generated, details=True)
        return web.json_response(shape.body(choices, counts))
    finally:
        engine.inflight.release(ticket)


async def _stream(
    request: web.Request,
    engine: Engine,
    ticket: Ticket,
    plan: Plan,
    shape: ReplyShape,
    include_usage: bool,
) -> web.StreamResponse:
    stream = SseStream(request)
    await stream.open()  # headers at once; the first event waits for the first token
    generated = 0
    try:
        for number, choice in enumerate(plan.choices):
            last = number == len(plan.choices) - 1 and not include_usage
            generated += await _stream_choice(stream, engine, ticket, choice, shape, last=last)
        if include_usage:
            await stream.send(
                shape.usage_chunk(usage(plan.prompt_tokens, generated, details=False))
            )
    except RequestAborted as exc:
        await stream.send(error_body(503, str(exc)))
    return await stream.finish()


async def _stream_choice(
    stream: SseStream,
    engine: Engine,
    ticket: Ticket,
    choice: Choice,
    shape: ReplyShape,
    *,
    last: bool,
) -> int:
    """Stream one choice's tokens; the number streamed."""
    opening = shape.role_chunk(choice.index)
    position = 0
    async for word in engine.generate(ticket, choice.key, choice.budget):
        if opening is not None:
            # As vLLM: the role chunk goes out with the first output of the engine (after
            # the response delay), so a stream's first byte is its first token.
            await stream.send(opening)
            opening = None
        final = position == choice.budget - 1
        event = shape.chunk(
            choice.index, word if position == 0 else " " + word, FINISH if final else None
        )
        await stream.send(shape.closing(event) if final and last else event)
        position += 1
    return position
