"""Checks of a request body before it may cause a switch. Pure and cheap.

A request that the engine would refuse must not first make llmux evict one model and
bring up another: its body is parsed once, its nesting bounded, and the top-level fields
OpenAI clients send are checked for their type here. Everything else is the engine's.
"""

from __future__ import annotations

import json
from typing import Any, Final

from llmux_site.gateway.errors import GatewayError

MAX_DEPTH: Final = 64
NUMBER = (int, float)
# endpoint -> (field, allowed types, required)
REQUIRED: Final[dict[str, tuple[str, tuple[type, ...]]]] = {
    "/v1/chat/completions": ("messages", (list,)),
    "/v1/completions": ("prompt", (str, list)),
    "/v1/embeddings": ("input", (str, list)),
}
OPTIONAL: Final[dict[str, tuple[type, ...]]] = {
    "stream": (bool,),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "n": (int,),
    "temperature": NUMBER,
    "top_p": NUMBER,
    "seed": (int,),
    "stop": (str, list),
    "user": (str,),
    "stream_options": (dict,),
}


def parse_body(body: bytes) -> tuple[dict[str, Any], str]:
    """The JSON object and its `model`; GatewayError 400 for anything else."""
    try:
        payload = json.loads(body)
    except RecursionError:
        raise _too_deep() from None
    except ValueError:
        raise GatewayError(400, "The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise GatewayError(400, "The request body must be a JSON object.")
    # Counting brackets is done in C; only a body with many of them is walked.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth(payload) > MAX_DEPTH:
        raise _too_deep()
    model = payload.get("model")
    if not isinstance(model, str):
        message = "`model` is required." if model is None else "`model` must be a string."
        raise GatewayError(400, message, param="model")
    return payload, model


def check_fields(path: str, payload: dict[str, Any]) -> None:
    """The types of the top-level fields OpenAI's API defines for `path`."""
    required = REQUIRED.get(path)
    if required is not None:
        name, types = required
        if not isinstance(payload.get(name), types) or isinstance(payload.get(name), bool):
            kinds = " or ".join("array" if t is list else "string" for t in types)
            raise GatewayError(400, f"`{name}` is required and must be a {kinds}.", param=name)
        if name == "messages" and not all(isinstance(m, dict) for m in payload[name]):
            raise GatewayError(400, "Each of `messages` must be an object.", param=name)
    for name, types in OPTIONAL.items():
        value = payload.get(name)
        if value is None:
            continue
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            raise GatewayError(400, f"`{name}` has the wrong type.", param=name)


def too_deep(payload: Any) -> bool:
    """Whether `payload` nests deeper than MAX_DEPTH (stops walking once it does)."""
    return _depth(payload) > MAX_DEPTH


def _depth(payload: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, level = stack.pop()
        if level > MAX_DEPTH:
            return level
        deepest = max(deepest, level)
        if isinstance(value, dict):
            stack.extend((v, level + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, level + 1) for v in value)
    return deepest


def _too_deep() -> GatewayError:
    return GatewayError(400, f"The request body is nested deeper than {MAX_DEPTH} levels.")


def reencode(payload: dict[str, Any]) -> bytes:
    """The payload as JSON bytes (lone surrogates, which UTF-8 cannot hold, as escapes)."""
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(payload, separators=(",", ":")).encode()
