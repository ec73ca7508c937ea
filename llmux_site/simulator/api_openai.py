"""OpenAI-compatible generation routes: /v1/models, /v1/completions, /v1/chat/completions."""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from llmux_site.simulator import fields, textgen
from llmux_site.simulator.api_control import engine_of
from llmux_site.simulator.engine import Engine
from llmux_site.simulator.errors import ApiError, validation_error, value_error
from llmux_site.simulator.generation import (
    FINISH,
    ReplyShape,
    fingerprint,
    plan_choices,
    run,
)
from llmux_site.simulator.sampling import parse_sampling

routes = web.RouteTableDef()


def resolve_model(engine: Engine, body: dict[str, Any], *, aliases: bool = True) -> str:
    """The served name the request asks for (default: the first); 404 for any other model.

    vLLM's generation and tokenizer routes name the served names in the message and the
    `model` param; its pooling routes do neither (`aliases=False`).
    """
    model = body.get("model")
    if model is None:
        return engine.config.model_name
    if not isinstance(model, str):
        raise validation_error("model", "string_type", "Input should be a valid string", model)
    if model not in engine.config.served_model_names:
        if not aliases:
            raise ApiError(404, f"The model `{model}` does not exist.")
        names = ", ".join(engine.config.served_model_names)
        raise ApiError(
            404, f"The model `{model}` does not exist. Valid aliases: {names}.", param="model"
        )
    return model


def not_served(engine: Engine, runner: str) -> web.Response | None:
    """vLLM registers the routes of its runner only: the other runner's are absent, and
    FastAPI answers an absent route with this 404 (not OpenAI's error shape)."""
    if engine.config.runner in ("auto", runner):
        return None
    return web.json_response({"detail": "Not Found"}, status=404)


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's `messages`: a non-empty list of objects."""
    messages = fields.listed(body, "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise validation_error(
                f"messages.{index}", "dict_type", "Input should be a valid dictionary", message
            )
    if not messages:
        raise value_error(
            "Cannot apply chat template to an empty conversation. Provide at least one message."
        )
    return messages


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
            "permission": [_permission(created)],
        }
        for name in config.served_model_names
    ]
    return web.json_response({"object": "list", "data": data})


def _permission(created: int) -> dict[str, Any]:
    return {
        "id": f"modelperm-{uuid.uuid4().hex[:16]}",
        "object": "model_permission",
        "created": created,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }


class CompletionShape(ReplyShape):
    """/v1/completions: `text` choices, no opening chunk."""

    object = chunk_object = "text_completion"
    prefix = "cmpl"

    def chunk(self, index: int, text: str, finish: str | None) -> dict[str, Any]:
        choice = {
            "index": index,
            "text": text,
            "logprobs": None,
            "finish_reason": finish,
            "stop_reason": None,
            "prompt_token_ids": None,
            "token_ids": None,
        }
        return {**self.envelope(self.chunk_object), "choices": [choice]}

    def choice(self, index: int, text: str) -> dict[str, Any]:
        return {
            "index": index,
            "text": text,
            "logprobs": None,
            "finish_reason": FINISH,
            "stop_reason": None,
            "token_ids": None,
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "routed_experts": None,
        }

    def body(self, choices: list[dict[str, Any]], counts: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.envelope(self.object),
            "choices": choices,
            "service_tier": None,
            "system_fingerprint": self.fingerprint,
            "usage": counts,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }


class ChatShape(ReplyShape):
    """/v1/chat/completions: `message` choices; a stream opens each with the role."""

    object = "chat.completion"
    chunk_object = "chat.completion.chunk"
    prefix = "chatcmpl"

    def role_chunk(self, index: int) -> dict[str, Any]:
        delta = {"role": "assistant", "content": ""}
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
        return {
            **self.envelope(self.chunk_object),
            "choices": [choice],
            "prompt_token_ids": None,
            "prompt_text": None,
        }

    def chunk(self, index: int, text: str, finish: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "index": index,
            "delta": {"content": text},
            "logprobs": None,
            "finish_reason": finish,
        }
        if finish is not None:
            choice["stop_reason"] = None
        choice["token_ids"] = None
        return {**self.envelope(self.chunk_object), "choices": [choice]}

    def choice(self, index: int, text: str) -> dict[str, Any]:
        message = {
            "role": "assistant",
            "content": text,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "reasoning": None,
        }
        return {
            "index": index,
            "message": message,
            "logprobs": None,
            "finish_reason": FINISH,
            "stop_reason": None,
            "token_ids": None,
            "routed_experts": None,
        }

    def body(self, choices: list[dict[str, Any]], counts: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.envelope(self.object),
            "choices": choices,
            "service_tier": None,
            "system_fingerprint": self.fingerprint,
            "usage": counts,
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "prompt_text": None,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
        }


def completion_prompts(body: dict[str, Any]) -> list[tuple[str, int]]:
    """(text, prompt tokens) of each prompt: a string, token ids, or a list of either."""
    prompt = body.get("prompt")
    if not prompt:
        raise value_error(
            "Either prompt or prompt_embeds must be provided and non-empty.", param="prompt"
        )
    if isinstance(prompt, str):
        return [(prompt, textgen.count_tokens(prompt))]
    if isinstance(prompt, list) and all(_is_token(item) for item in prompt):
        return [(textgen.detokenize(prompt), len(prompt))]
    if isinstance(prompt, list):
        return [_one_prompt(item) for item in prompt]
    raise validation_error("prompt", "string_type", "Input should be a valid string", prompt)


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _one_prompt(item: Any) -> tuple[str, int]:
    if isinstance(item, str) and item:
        return item, textgen.count_tokens(item)
    if isinstance(item, list) and item and all(_is_token(token) for token in item):
        return textgen.detokenize(item), len(item)
    raise validation_error("prompt", "string_type", "Input should be a valid string", item)


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    if (absent := not_served(engine, "generate")) is not None:
        return absent
    body = await fields.openai_body(request)
    sampling = parse_sampling(body, token_keys=("max_tokens",))
    model = resolve_model(engine, body)
    plan = plan_choices(engine, completion_prompts(body), sampling)
    return await run(request, plan, sampling, CompletionShape(model, fingerprint(engine)))


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    engine = engine_of(request)
    if (absent := not_served(engine, "generate")) is not None:
        return absent
    body = await fields.openai_body(request)
    sampling = parse_sampling(body, token_keys=("max_completion_tokens", "max_tokens"))
    messages = chat_messages(body)
    model = resolve_model(engine, body)
    prompt = (textgen.chat_prompt(messages), textgen.chat_prompt_tokens(messages))
    plan = plan_choices(engine, [prompt], sampling)
    return await run(request, plan, sampling, ChatShape(model, fingerprint(engine)))
