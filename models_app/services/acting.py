"""What every operator action shares: its errors, its outcome, and the audit around it.

An action (services.operator_actions, services.definition_actions) runs inside `audited`:
a user who may not act is refused and the refusal recorded; an ActionError (or a control
service's refusal) is recorded as failed and raised for the entry point to show; success
is recorded with its outcome. Entry points map the errors: PermissionError to 403,
StateError to 409, any other ActionError to 400 (the dashboard shows the message).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from models_app.models import AuditResult, ModelDefinition
from models_app.roles import can_act, role_of
from models_app.services import audit
from models_app.services.control import ControlError


class ActionError(Exception):
    """The action cannot be done as asked; the message is shown to the operator."""


class StateError(ActionError):
    """The request is well formed but the current state forbids it (the API's 409)."""


@dataclass(frozen=True)
class Outcome:
    """What an action did, as the operator is told and the audit records it."""

    message: str
    result: str = AuditResult.OK
    operation: int | None = None  # the queued SwitchRequest, for lifecycle actions
    detail: str | None = None  # what the audit records, where not the message

    @property
    def audit_detail(self) -> str:
        return self.message if self.detail is None else self.detail


@dataclass(frozen=True)
class Acting:
    """Who asks for an action, through which entry point (dashboard or api), from where."""

    user: Any
    source: str
    remote_addr: str = ""

    @property
    def name(self) -> str:
        return str(self.user.get_username())

    def record(
        self,
        action: str,
        target: str,
        result: str,
        detail: str = "",
        operation: int | None = None,
    ) -> None:
        audit.record(
            self.user,
            action,
            target,
            result=result,
            detail=detail,
            remote_addr=self.remote_addr,
            source=self.source,
            operation=operation,
        )

    def refuse_viewers(self, action: str, target: str) -> None:
        """Raise PermissionError, recorded as refused, unless the user may act (the server
        checks this on every action, whatever the page showed)."""
        if not can_act(self.user):
            self.record(action, target, AuditResult.REFUSED, "viewer")
            raise PermissionError("viewers cannot change anything")

    def refuse_non_admins(self, action: str, target: str) -> None:
        """Raise PermissionError, recorded as refused, unless the user is an administrator."""
        if role_of(self.user) != "admin":
            self.record(action, target, AuditResult.REFUSED, "not an administrator")
            raise PermissionError("only administrators may do this")


def model_named(name: str) -> ModelDefinition:
    """The model an action names; ActionError (recorded as failed) when there is none."""
    model = ModelDefinition.objects.filter(name=name).first()
    if model is None:
        raise ActionError(f"no model named {name!r}")
    return model


@contextmanager
def audited(acting: Acting, action: str, target: str) -> Iterator[Callable[[Outcome], Outcome]]:
    """Run an action's body: refused for viewers; its failure or its outcome recorded.
    The body passes its outcome through the yielded function once it succeeded."""
    acting.refuse_viewers(action, target)

    def done(outcome: Outcome) -> Outcome:
        acting.record(action, target, outcome.result, outcome.audit_detail, outcome.operation)
        return outcome

    try:
        yield done
    except ActionError as exc:
        acting.record(action, target, AuditResult.FAILED, str(exc))
        raise
    except ControlError as exc:
        acting.record(action, target, AuditResult.FAILED, str(exc))
        raise StateError(str(exc)) from None
