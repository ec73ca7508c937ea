"""The shapes vLLM 0.32 answers with (its CPU build, seen over its Unix socket): the keys of
each object, which the simulator must answer with too. Values are the scenarios' business."""

from __future__ import annotations

from typing import Any

COMPLETION = {
    "id",
    "object",
    "created",
    "model",
    "choices",
    "service_tier",
    "system_fingerprint",
    "usage",
    "kv_transfer_params",
    "ec_transfer_params",
    "metrics",
}
CHAT = COMPLETION | {"prompt_logprobs", "prompt_token_ids", "prompt_text"}
COMPLETION_CHOICE = {
    "index",
    "text",
    "logprobs",
    "finish_reason",
    "stop_reason",
    "token_ids",
    "prompt_logprobs",
    "prompt_token_ids",
    "routed_experts",
}
CHAT_CHOICE = {
    "index",
    "message",
    "logprobs",
    "finish_reason",
    "stop_reason",
    "token_ids",
    "routed_experts",
}
MESSAGE = {"role", "content", "refusal", "annotations", "audio", "function_call", "reasoning"}
USAGE = {
    "prompt_tokens",
    "total_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
}
STREAM_USAGE = {"prompt_tokens", "total_tokens", "completion_tokens"}
# A stream's chunks: the envelope, the choice of a token, the choice that ends (vLLM adds
# `stop_reason` to a chat choice only then), the chat's opening role chunk.
CHUNK = {"id", "object", "created", "model", "choices"}
COMPLETION_CHUNK_CHOICE = {
    "index",
    "text",
    "logprobs",
    "finish_reason",
    "stop_reason",
    "prompt_token_ids",
    "token_ids",
}
CHAT_CHUNK_CHOICE = {"index", "delta", "logprobs", "finish_reason", "token_ids"}
CHAT_ROLE_CHUNK = CHUNK | {"prompt_token_ids", "prompt_text"}
RESPONSE = {
    "id",
    "created_at",
    "incomplete_details",
    "instructions",
    "metadata",
    "model",
    "object",
    "output",
    "parallel_tool_calls",
    "temperature",
    "tool_choice",
    "tools",
    "top_p",
    "background",
    "max_output_tokens",
    "max_tool_calls",
    "previous_response_id",
    "prompt",
    "reasoning",
    "service_tier",
    "status",
    "text",
    "top_logprobs",
    "truncation",
    "usage",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "kv_transfer_params",
    "ec_transfer_params",
    "input_messages",
    "output_messages",
}
RESPONSE_ITEM = {"id", "content", "role", "status", "type", "phase"}
RESPONSE_PART = {"annotations", "text", "type", "logprobs"}
RESPONSE_USAGE = {
    "input_tokens",
    "input_tokens_details",
    "output_tokens",
    "output_tokens_details",
    "total_tokens",
}
RESPONSE_EVENTS_BEFORE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
RESPONSE_EVENTS_AFTER = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
EMBEDDINGS = {"id", "object", "created", "model", "data", "usage"}
EMBEDDING = {"index", "object", "embedding"}
SCORE = {"id", "object", "created", "model", "data", "usage"}
RERANK = {"id", "model", "usage", "results"}
TOKENIZE = {"count", "max_model_len", "tokens", "token_strs"}
MODEL = {"id", "object", "created", "owned_by", "root", "parent", "max_model_len", "permission"}
PERMISSION = {
    "id",
    "object",
    "created",
    "allow_create_engine",
    "allow_sampling",
    "allow_logprobs",
    "allow_search_indices",
    "allow_view",
    "allow_fine_tuning",
    "organization",
    "group",
    "is_blocking",
}
ERROR = {"message", "type", "param", "code"}


def keys(value: Any) -> set[str]:
    """The keys of a JSON object (a failed assertion shows the whole value)."""
    assert isinstance(value, dict), value
    return set(value)


def openai_error(body: Any, status: int) -> dict[str, Any]:
    """The `error` object of OpenAI's error shape, checked: its keys and its `code`."""
    assert keys(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert keys(error) == ERROR and error["code"] == status, body
    assert isinstance(error["message"], str) and error["message"], body
    return error
