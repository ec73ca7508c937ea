"""Request fields read as vLLM 0.32 reads them (seen with its CPU build).

Two kinds of refusal, as there: a field of the wrong type fails vLLM's pydantic request
model (type `Bad Request`, param `body.NAME`, pydantic's record in the message), after
pydantic's lax coercions (`"7"` is an integer, `true` is 1); a value vLLM checks itself is
a `BadRequestError` naming the field (`temperature must be non-negative, got -1.0.`).
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from llmux_site.simulator.errors import VALIDATION_TYPE, ApiError, validation_error


async def openai_body(request: web.Request) -> dict[str, Any]:
    """The JSON object of an OpenAI route's request, refused as vLLM's routes refuse it."""
    if request.content_type != "application/json":
        raise ApiError(
            400,
            "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
            kind=VALIDATION_TYPE,
        )
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise validation_error("0", "json_invalid", "JSON decode error", {}) from None
    if not isinstance(body, dict):
        raise validation_error(
            "",
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
            body,
        )
    return body


def integer(body: dict[str, Any], name: str) -> int | None:
    """An integer field (None when absent or null)."""
    value = body.get(name)
    if value is None or (isinstance(value, int)):
        return None if value is None else int(value)  # a bool is an int to pydantic too
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise validation_error(
            name,
            "int_from_float",
            "Input should be a valid integer, got a number with a fractional part",
            value,
        )
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise validation_error(
                name,
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
                value,
            ) from None
    raise validation_error(name, "int_type", "Input should be a valid integer", value)


def number(body: dict[str, Any], name: str) -> float | None:
    """A number field (None when absent or null)."""
    value = body.get(name)
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    if isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            parsed = math.nan
        if not math.isnan(parsed):
            return parsed
        raise validation_error(
            name,
            "float_parsing",
            "Input should be a valid number, unable to parse string as a number",
            value,
        )
    raise validation_error(name, "float_type", "Input should be a valid number", value)


_TRUE = {"1", "true", "yes", "on", "t", "y"}
_FALSE = {"0", "false", "no", "off", "f", "n"}


def boolean(body: dict[str, Any], name: str) -> bool:
    """A boolean field (False when absent or null)."""
    value = body.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise validation_error(
        name, "bool_parsing", "Input should be a valid boolean, unable to interpret input", value
    )


def listed(body: dict[str, Any], name: str) -> list[Any]:
    """A required list field."""
    value = body.get(name)
    if value is None:
        raise validation_error(name, "missing", "Field required", body)
    if not isinstance(value, list):
        raise validation_error(name, "list_type", "Input should be a valid list", value)
    return value
