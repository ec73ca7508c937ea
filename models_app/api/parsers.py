"""The API's JSON parser: the gateway's limits (size by Django, depth here)."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from llmux_site.gateway.checks import MAX_DEPTH, too_deep


class BoundedJSONParser(JSONParser):
    """JSON nested deeper than the gateway allows is a 400, never a RecursionError."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
        if too_deep(data):
            raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels")
        return data
