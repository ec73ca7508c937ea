"""Pagination that refuses a bad limit or offset instead of silently ignoring it."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination


class StrictLimitOffset(LimitOffsetPagination):
    max_limit = 500

    def _whole(self, request: Any, name: str, default: int | None) -> int | None:
        values = request.query_params.getlist(name)
        if not values:
            return default
        if len(values) > 1 or not values[0].isdigit():
            raise ValidationError({name: f"{name} must be one whole number >= 0"})
        return int(values[0])

    def get_limit(self, request: Any) -> int | None:
        limit = self._whole(request, self.limit_query_param, self.default_limit)
        if limit is not None and not 1 <= limit <= self.max_limit:
            raise ValidationError({"limit": f"limit must be between 1 and {self.max_limit}"})
        return limit

    def get_offset(self, request: Any) -> int:
        return self._whole(request, self.offset_query_param, 0) or 0

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        bounds = {
            self.limit_query_param: {"minimum": 1, "maximum": self.max_limit},
            self.offset_query_param: {"minimum": 0},
        }
        for parameter in parameters:
            parameter["schema"] = {**parameter.get("schema", {}), **bounds[parameter["name"]]}
        return parameters
