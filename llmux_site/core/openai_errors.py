"""OpenAI's error body, as vLLM writes it: `{"error": {"message", "type", "param", "code"}}`.

vLLM names the type after the exception class and puts the HTTP status in `code`; the
gateway answers the same way, and so does the simulator standing in for vLLM.
"""

from __future__ import annotations

from typing import Any, Final

# Named after the openai package's exception class for the status where it has one
# (AuthenticationError, RateLimitError, ...), else after the status's own phrase.
ERROR_TYPES: Final[dict[int, str]] = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    408: "RequestTimeoutError",
    409: "ConflictError",
    413: "RequestEntityTooLargeError",
    415: "UnsupportedMediaTypeError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    431: "RequestHeaderFieldsTooLargeError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}


def error_payload(status: int, message: str, *, param: str | None = None) -> dict[str, Any]:
    """The error body for an HTTP `status`."""
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "InternalServerError"),
            "param": param,
            "code": status,
        }
    }
