"""Errors the simulated engine answers with, always in OpenAI's `{"error": {...}}` shape."""

from __future__ import annotations

from typing import Any, Final

from llmux_site.core.openai_errors import error_payload

# vLLM answers a request its pydantic models refuse (a wrong type, a missing field, a body
# that is not JSON) with this `type`, the status's phrase, not an exception class's name.
VALIDATION_TYPE: Final = "Bad Request"


class ApiError(Exception):
    """A failure to report to the HTTP caller with `status`."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.kind = kind  # the error's `type`, when not the one its status implies

    def body(self) -> dict[str, Any]:
        """vLLM's error body: OpenAI's shape with the HTTP status as `code`."""
        body = error_body(self.status, self.message, param=self.param)
        if self.kind is not None:
            body["error"]["type"] = self.kind
        return body


class RequestAborted(Exception):
    """An in-flight request ended because the engine went to sleep with mode=abort."""


def error_body(status: int, message: str, *, param: str | None = None) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}`."""
    return error_payload(status, message, param=param)


def validation_error(field: str, kind: str, message: str, value: Any) -> ApiError:
    """What vLLM answers when its request model refuses one field: pydantic's error record
    in the message, `body.FIELD` as `param` (`body` alone for the body itself)."""
    location = f"body.{field}" if field else "body"
    shown = f"<dict of {len(value)} items>" if isinstance(value, dict) else value
    record = {"type": kind, "loc": location, "msg": message, "input": shown}
    return ApiError(400, f"1 validation error:\n  {record!r}", param=location, kind=VALIDATION_TYPE)


def value_error(message: str, *, param: str | None = None, value: Any = None) -> ApiError:
    """vLLM's own check of a value (its VLLMValidationError): `MESSAGE (parameter=P, value=V)`."""
    extras = [f"parameter={param}"] if param is not None else []
    if value is not None:
        extras.append(f"value={value}")
    text = f"{message} ({', '.join(extras)})" if extras else message
    return ApiError(400, text, param=param)
