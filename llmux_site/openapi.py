"""The gateway's endpoints in the same OpenAPI schema as the management API.

The gateway is a lean ASGI app, not DRF views, so drf-spectacular cannot discover it; this
postprocessing hook adds its paths (OpenAI's shapes, llmux's error statuses) by hand.
"""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/OpenAIError"}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"oneOf": [{"type": "integer"}, {"type": "string"}], "nullable": True},
            },
        }
    },
}
ERRORS = {
    "400": "Invalid JSON, no `model`, or a Host outside LLMUX_ALLOWED_HOSTS",
    "401": "No valid API key where one is required (checked before any model)",
    "403": "The key's scopes do not allow the model, whether it exists or not",
    "404": "Unknown model",
    "408": "The request's headers or body did not arrive in time",
    "413": "Body larger than LLMUX_MAX_BODY_BYTES",
    "415": "Content-Type is not application/json",
    "429": "Over the key's requests per minute (Retry-After)",
    "431": "Request line and headers larger than 16 KiB",
    "502": "The engine failed to answer",
    "503": "The switch to the model failed (the reason is in the message), manual mode",
    "504": "The model did not become active within the request timeout",
}
OPENAI_BODY = {
    "type": "object",
    "required": ["model"],
    "properties": {
        "model": {"type": "string", "description": "A model name or alias of the registry"},
        "stream": {"type": "boolean", "description": "Stream server-sent events"},
    },
    "additionalProperties": True,
}
INFERENCE = {
    "/v1/chat/completions": "Chat completion (OpenAI); switches the model in when needed",
    "/v1/completions": "Text completion (OpenAI); switches the model in when needed",
    "/v1/embeddings": "Embeddings (OpenAI); switches the model in when needed",
    "/v1/responses": "Responses (OpenAI); switches the model in when needed",
    "/v1/rerank": "Rerank documents (vLLM); switches the model in when needed",
    "/v1/score": "Score text pairs (vLLM); switches the model in when needed",
    "/tokenize": "Token ids of a `prompt` or chat `messages` (vLLM's route, at the root); "
    "switches the model in when needed",
    "/detokenize": "Text of `tokens` (vLLM's route, at the root); switches the model in when "
    "needed",
}


def _errors(*codes: str) -> dict[str, Any]:
    return {
        code: {"description": ERRORS[code], "content": {"application/json": {"schema": ERROR}}}
        for code in codes
    }


def _inference(path: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": "gateway_" + path.strip("/").removeprefix("v1/").replace("/", "_"),
            "tags": ["gateway"],
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": OPENAI_BODY}},
            },
            "responses": {
                "200": {
                    "description": "The engine's answer, passed through unchanged",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_errors(
                    "400",
                    "401",
                    "403",
                    "404",
                    "408",
                    "413",
                    "415",
                    "429",
                    "431",
                    "502",
                    "503",
                    "504",
                ),
            },
        }
    }


def _models() -> dict[str, Any]:
    listing = {
        "type": "object",
        "properties": {"object": {"type": "string"}, "data": {"type": "array", "items": {}}},
    }
    return {
        "get": {
            "operationId": "gateway_models",
            "tags": ["gateway"],
            "summary": "The models of the registry the key may use, with state and max_model_len",
            "responses": {
                "200": {
                    "description": "OpenAI model list",
                    "content": {"application/json": {"schema": listing}},
                },
                **_errors("400", "401"),
            },
        }
    }


def add_gateway_paths(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: document `/v1/`."""
    paths = result.setdefault("paths", {})
    paths["/v1/models"] = _models()
    for path, summary in INFERENCE.items():
        paths[path] = _inference(path, summary)
    result.setdefault("components", {}).setdefault("schemas", {})["OpenAIError"] = ERROR_SCHEMA
    return result


API_ERROR = {"$ref": "#/components/schemas/ApiError"}
API_ERROR_SCHEMA = {
    "type": "object",
    "description": "DRF's error body: `detail`, or a list of messages per field",
    "additionalProperties": True,
}
API_ERRORS = {
    "400": "Invalid input: the body names each problem",
    "401": "Not authenticated",
    "403": "Authenticated, but the role may not do this",
    "404": "No such object",
    "409": "The current state forbids it (an operation running on the GPU group, an image "
    "that cannot be restored or deleted now, a model that must be up first)",
}


def add_api_error_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Every management operation documents the errors every DRF view can answer."""
    result.setdefault("components", {}).setdefault("schemas", {})["ApiError"] = API_ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, description in API_ERRORS.items():
                responses.setdefault(
                    code,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": API_ERROR}},
                    },
                )
    return result
