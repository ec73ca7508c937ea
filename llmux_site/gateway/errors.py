"""The gateway's errors, always answered in OpenAI's ``{"error": {...}}`` shape."""

from __future__ import annotations

import json
from typing import Final

from llmux_site.core.openai_errors import error_payload

MAX_ERROR_MESSAGE: Final = 2000


class GatewayError(Exception):
    """A failure to answer the client with ``status`` and an OpenAI-shaped body."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers: list[tuple[bytes, bytes]] = []  # e.g. Retry-After on a 429

    @classmethod
    def switch_failed(cls, model: str, reason: str) -> GatewayError:
        """503: the switch that would have brought ``model`` up failed."""
        return cls(503, f"Model `{model}` is unavailable: switching to it failed: {reason}")

    @classmethod
    def timed_out(cls, model: str, seconds: float) -> GatewayError:
        """504: ``model`` did not become active within the request timeout."""
        return cls(504, f"Timed out after {seconds:g}s waiting for model `{model}` to be ready.")

    @classmethod
    def engine_failed(cls, detail: str) -> GatewayError:
        """502: the engine refused the connection or broke before answering."""
        return cls(502, f"The model engine failed to answer: {detail}")

    @classmethod
    def engine_unreachable(cls, detail: str) -> EngineUnreachableError:
        """502 unless the backend finds the engine dead and the request may go again."""
        return EngineUnreachableError(502, f"The model engine failed to answer: {detail}")

    def body(self) -> bytes:
        return error_body(self.status, self.message, param=self.param)


class EngineUnreachableError(GatewayError):
    """The engine failed before any answer: nothing reached the client yet."""


def error_body(status: int, message: str, *, param: str | None = None) -> bytes:
    return json.dumps(error_payload(status, message, param=param)).encode()


def sse_error_event(status: int, message: str) -> bytes:
    """The last event of a stream whose engine broke after the response had started."""
    return b"data: " + error_body(status, message) + b"\n\n"


def as_openai_error(status: int, raw: bytes) -> bytes:
    """An engine's error body in OpenAI's shape: ``raw`` itself when it already is.

    vLLM answers its own errors in that shape, but the server around it does not always
    (FastAPI's ``{"detail": ...}`` for an unknown route, a plain-text 500 from uvicorn).
    """
    try:
        parsed = json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", "replace").strip()
        message = text[:MAX_ERROR_MESSAGE] or f"The model engine answered HTTP {status}."
        return error_body(status, message)
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return raw
    detail = parsed.get("detail", parsed) if isinstance(parsed, dict) else parsed
    message = detail if isinstance(detail, str) else json.dumps(detail)[:MAX_ERROR_MESSAGE]
    return error_body(status, message)
