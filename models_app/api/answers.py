"""How an API view calls an action and answers: who acts, and the action's errors mapped
to status codes (PermissionError 403, StateError 409, any other ActionError 400)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from models_app.api.refusals import AuditedRefusal
from models_app.models import SwapTrigger
from models_app.services.acting import Acting, ActionError, Outcome, StateError
from models_app.services.definition_actions import InvalidDefinition

T = TypeVar("T")


def acting(request: Request) -> Acting:
    """The request's user acting through the API, from its address."""
    return Acting(request.user, SwapTrigger.API, str(request.META.get("REMOTE_ADDR", "")))


def invalid_definition(exc: InvalidDefinition) -> ValidationError:
    """A refused definition as a 400 carries it: every problem under `definition`."""
    return ValidationError({"definition": exc.errors})


def answer(act: Callable[[], T], respond: Callable[[T], Response]) -> Response:
    """`respond` to what the action returns; its refusal as the API answers it."""
    try:
        result = act()
    except PermissionError as exc:
        raise AuditedRefusal(str(exc)) from None  # the action recorded it
    except InvalidDefinition as exc:
        raise invalid_definition(exc) from None
    except StateError as exc:
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    except ActionError as exc:
        raise ValidationError({"detail": str(exc)}) from None
    return respond(result)


def accepted(request: Request, outcome: Outcome) -> Response:
    """202 with the queued operation to follow, or 200 for an action done at once."""
    url = (
        request.build_absolute_uri(f"/api/operations/{outcome.operation}/")
        if outcome.operation
        else None
    )
    code = status.HTTP_202_ACCEPTED if outcome.operation else status.HTTP_200_OK
    return Response(
        {"message": outcome.message, "operation": outcome.operation, "url": url}, status=code
    )
