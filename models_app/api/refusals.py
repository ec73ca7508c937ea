"""Refused API writes are audited: one exception handler for every write endpoint.

DRF refuses a write before its view runs (no or bad credentials, a viewer's write, an
operator's key write), so no view can audit it; this handler sees every such refusal.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.views import exception_handler

from models_app.models import AuditResult
from models_app.services import audit

# The audited action of a write, by URL name and method, as its success is recorded.
WRITE_ACTIONS = {
    ("api-models", "POST"): "create_model",
    ("api-model", "PUT"): "edit",
    ("api-model", "PATCH"): "edit",
    ("api-model", "DELETE"): "delete_model",
    ("api-model-override", "PUT"): "override",
    ("api-mode", "POST"): "mode",
    ("api-unpin", "POST"): "unpin",
    ("api-image", "DELETE"): "delete_image",
    ("api-image-restore", "POST"): "restore",
    ("api-keys", "POST"): "create_key",
    ("api-key", "DELETE"): "revoke_key",
}


class AuditedRefusal(PermissionDenied):
    """A refusal its action has audited already (models_app.services.acting does)."""


def audit_refusals(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, after recording a refused write (401 or 403) as an AuditEntry."""
    request = context.get("request")
    if (
        request is not None
        and request.method not in SAFE_METHODS
        and _is_refusal(exc)
        and not isinstance(exc, AuditedRefusal)
    ):
        action, target = _write(request, context.get("kwargs") or {})
        audit.record(
            request.user,
            action,
            target,
            result=AuditResult.REFUSED,
            detail=str(getattr(exc, "detail", exc)),
            source="api",
            remote_addr=str(request.META.get("REMOTE_ADDR", "")),
        )
    return exception_handler(exc, context)


def _is_refusal(exc: Exception) -> bool:
    """No or bad credentials (401, or 403 where DRF has no challenge to send), a failed
    CSRF check or a permission's no (403)."""
    return isinstance(exc, APIException) and exc.status_code in (401, 403)


def _write(request: Any, kwargs: dict[str, Any]) -> tuple[str, str]:
    """(action, target) of a write, named as the audit names it when it is carried out."""
    match = request.resolver_match
    url_name = match.url_name if match is not None else ""
    action = kwargs.get("action") or WRITE_ACTIONS.get((url_name, request.method))
    target = str(kwargs.get("name") or kwargs.get("pk") or "")
    return str(action or f"{request.method} {request.path}")[:64], target
