"""Errors the simulated engine answers with, always in OpenAI's `{"error": {...}}` shape."""

from __future__ import annotations

from typing import Any

from llmux_site.core.openai_errors import error_payload


class ApiError(Exception):
    """A failure to report to the HTTP caller with `status`."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        """vLLM's error body: OpenAI's shape with the HTTP status as `code`."""
        return error_body(self.status, self.message, param=self.param)


class RequestAborted(Exception):
    """An in-flight request ended because the engine went to sleep with mode=abort."""


def error_body(status: int, message: str, *, param: str | None = None) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}`."""
    return error_payload(status, message, param=param)
