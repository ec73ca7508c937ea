"""/v1/responses, OpenAI's Responses API, for a plain text request (vLLM 0.32's shapes, seen
with its CPU build): the input is a chat (a string is one user message, `instructions` a
system message before it), so at temperature 0 a response says what the chat says.

A stream is named events (`event: response.created`, ...) and, unlike the other routes,
ends with `response.completed` and no `data: [DONE]`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from llmux_site.simulator import fields, textgen
from llmux_site.simulator.api_control import engine_of
from llmux_site.simulator.api_openai import not_served, resolve_model
from llmux_site.simulator.errors import ApiError, RequestAborted, error_body, validation_error
from llmux_site.simulator.generation import SseStream, new_id, plan_choices
from llmux_site.simulator.sampling import Sampling, parse_sampling

routes = web.RouteTableDef()
BUDGET_FIELD = "max_output_tokens"


def response_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat a responses request stands for."""
    given = body.get("input")
    if isinstance(given, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": given}]
    elif isinstance(given, list) and all(isinstance(item, dict) for item in given):
        messages = [
            {"role": item.get("role", "user"), "content": item.get("content")} for item in given
        ]
    else:
        raise validation_error("input", "string_type", "Input should be a valid string", given)
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise validation_error(
                "instructions", "string_type", "Input should be a valid string", instructions
            )
        messages.insert(0, {"role": "system", "content": instructions})
    return messages


class ResponseBody:
    """The response object as it grows: in progress, then with its output and usage."""

    def __init__(self, model: str, body: dict[str, Any], sampling: Sampling) -> None:
        self.id = new_id("resp", "_")
        self.message_id = new_id("msg", "_")
        self.created = int(time.time())
        self.model = model
        self.instructions = body.get("instructions")
        self.sampling = sampling

    def item(self, text: str | None) -> dict[str, Any]:
        """The output message: in progress with no content (None), else completed."""
        content = [] if text is None else [part(text, logprobs=None)]
        return {
            "id": self.message_id,
            "content": content,
            "role": "assistant",
            "status": "in_progress" if text is None else "completed",
            "type": "message",
            "phase": None,
        }

    def render(self, text: str | None, counts: tuple[int, int] | None) -> dict[str, Any]:
        """In progress (no text), else finished with `text` and (input, output) tokens."""
        limited = text is not None and self.sampling.max_tokens is not None
        return {
            "id": self.id,
            "created_at": self.created,
            "incomplete_details": {"reason": BUDGET_FIELD} if limited else None,
            "instructions": self.instructions,
            "metadata": None,
            "model": self.model,
            "object": "response",
            "output": [] if text is None else [self.item(text)],
            "parallel_tool_calls": True,
            "temperature": self.sampling.temperature,
            "tool_choice": "none",
            "tools": [],
            "top_p": 1.0,
            "background": False,
            "max_output_tokens": self.sampling.max_tokens,
            "max_tool_calls": None,
            "previous_response_id": None,
            "prompt": None,
            "reasoning": None,
            "service_tier": "auto",
            "status": "in_progress" if text is None else ("incomplete" if limited else "completed"),
            "text": None,
            "top_logprobs": None,
            "truncation": "disabled",
            "usage": None if counts is None else response_usage(*counts),
            "user": None,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "input_messages": None,
            "output_messages": None,
        }


def part(text: str, *, logprobs: list[Any] | None) -> dict[str, Any]:
    return {"annotations": [], "text": text, "type": "output_text", "logprobs": logprobs}


def response_usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": 0,
            "cache_write_tokens": 0,
            "input_tokens_per_turn": [],
            "cached_tokens_per_turn": [],
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": 0,
            "tool_output_tokens": 0,
            "output_tokens_per_turn": [],
            "tool_output_tokens_per_turn": [],
        },
        "total_tokens": input_tokens + output_tokens,
    }


@routes.post("/v1/responses")
async def responses(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    if (absent := not_served(engine, "generate")) is not None:
        return absent
    body = await fields.openai_body(request)
    sampling = parse_sampling(body, token_keys=(BUDGET_FIELD,))
    messages = response_messages(body)
    model = resolve_model(engine, body)
    prompt_tokens = textgen.chat_prompt_tokens(messages)
    prompt = (textgen.chat_prompt(messages), prompt_tokens)
    [choice] = plan_choices(engine, [prompt], sampling, name=BUDGET_FIELD).choices
    answer = ResponseBody(model, body, sampling)
    ticket = engine.admit()
    engine.usage["prompt_tokens"] += prompt_tokens
    try:
        words = engine.generate(ticket, choice.key, choice.budget)
        if sampling.stream:
            return await _stream(request, answer, words, prompt_tokens)
        try:
            text = textgen.join_tokens([word async for word in words])
        except RequestAborted as exc:
            raise ApiError(503, str(exc)) from None
        return web.json_response(answer.render(text, (prompt_tokens, choice.budget)))
    finally:
        engine.inflight.release(ticket)


class EventStream:
    """A responses stream: every event named and numbered, in vLLM's order."""

    def __init__(self, request: web.Request, answer: ResponseBody) -> None:
        self.sse = SseStream(request)
        self.answer = answer
        self.sequence = 0
        self.where = {"item_id": answer.message_id, "output_index": 0}

    async def send(self, kind: str, payload: dict[str, Any]) -> None:
        event = {**payload, "sequence_number": self.sequence, "type": kind}
        self.sequence += 1
        await self.sse.send(event, event=kind)

    async def opening(self) -> None:
        """The response in progress, its message item and its empty text part."""
        started = {"response": self.answer.render(None, None)}
        await self.send("response.created", started)
        await self.send("response.in_progress", started)
        added = {"item": self.answer.item(None), "output_index": 0}
        await self.send("response.output_item.added", added)
        empty = {"content_index": 0, **self.where, "part": part("", logprobs=[])}
        await self.send("response.content_part.added", empty)

    async def deltas(self, words: AsyncIterator[str]) -> list[str]:
        """One delta event per token; the deltas."""
        pieces: list[str] = []
        async for word in words:
            pieces.append(word if not pieces else " " + word)
            delta = {"content_index": 0, "delta": pieces[-1], **self.where, "logprobs": []}
            await self.send("response.output_text.delta", delta)
        return pieces

    async def closing(self, text: str, counts: tuple[int, int]) -> None:
        """The text, its part and its item done, then the whole response."""
        where = {"content_index": 0, **self.where}
        await self.send("response.output_text.done", {**where, "logprobs": [], "text": text})
        await self.send("response.content_part.done", {**where, "part": part(text, logprobs=None)})
        done = {"item": self.answer.item(text), "output_index": 0}
        await self.send("response.output_item.done", done)
        await self.send("response.completed", {"response": self.answer.render(text, counts)})


async def _stream(
    request: web.Request, answer: ResponseBody, words: AsyncIterator[str], prompt_tokens: int
) -> web.StreamResponse:
    events = EventStream(request, answer)
    await events.sse.open()
    try:
        await events.opening()
        pieces = await events.deltas(words)
        await events.closing("".join(pieces), (prompt_tokens, len(pieces)))
    except RequestAborted as exc:
        await events.sse.send(error_body(503, str(exc)))
    return await events.sse.finish(done=False)
