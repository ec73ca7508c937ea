"""OpenAPI postprocessing for the management API."""

from __future__ import annotations

from typing import Any

from models_app.api.serializers import StrictSerializer


def _strict_components() -> set[str]:
    found: set[str] = set()
    pending = list(StrictSerializer.__subclasses__())
    while pending:
        cls = pending.pop()
        found.add(cls.__name__.removesuffix("Serializer"))
        pending.extend(cls.__subclasses__())
    return found


def forbid_unknown_fields(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Request bodies refuse unknown fields (StrictSerializer): the schema says so."""
    schemas = result.get("components", {}).get("schemas", {})
    for name in _strict_components():
        for variant in (name, f"{name}Request", f"Patched{name}Request", f"Patched{name}"):
            if variant in schemas:
                schemas[variant]["additionalProperties"] = False
    return result
