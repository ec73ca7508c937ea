"""The dashboard's action buttons: each posted form handed to its action in models_app.

The actions validate, carry out and audit (models_app.services.acting); this only reads
the fields each button posts (templates/dashboard/_action.html, the definition editor).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from models_app.services import definition_actions as definitions
from models_app.services import operator_actions as actions
from models_app.services.acting import Acting, ActionError, Outcome

Form = Mapping[str, str]


def _field(form: Form, key: str) -> str:
    return str(form.get(key) or "")


# URL name -> the action, called with the posted form and who acts.
FORM_ACTIONS: dict[str, Callable[[Form, Acting], Outcome]] = {
    "switch": lambda form, acting: actions.do_switch(_field(form, "model"), acting=acting),
    "evict": lambda form, acting: actions.do_evict(
        _field(form, "model"),
        weights=_field(form, "weights"),
        process=_field(form, "process"),
        acting=acting,
    ),
    "wake": lambda form, acting: actions.do_wake(_field(form, "model"), acting=acting),
    "stop": lambda form, acting: actions.do_stop(_field(form, "model"), acting=acting),
    "checkpoint": lambda form, acting: actions.do_checkpoint(
        _field(form, "model"), weights=_field(form, "weights"), acting=acting
    ),
    "restore": lambda form, acting: actions.do_restore(_field(form, "model"), acting=acting),
    "delete_image": lambda form, acting: actions.do_delete_image(
        _field(form, "image"), acting=acting
    ),
    "pin": lambda form, acting: actions.do_pin(_field(form, "model"), acting=acting),
    "unpin": lambda form, acting: actions.do_unpin(acting=acting),
    "mode": lambda form, acting: actions.do_set_mode(_field(form, "mode"), acting=acting),
    "edit": lambda form, acting: definitions.do_edit_model(
        _field(form, "model"), _field(form, "definition"), acting=acting
    ),
}


def perform(name: str, form: Form, acting: Acting) -> Outcome:
    """Carry out the action button `name`; PermissionError for viewers (recorded),
    ActionError with the message to show."""
    action = FORM_ACTIONS.get(name)
    if action is None:
        target = _field(form, "model") or _field(form, "image") or _field(form, "mode")
        acting.refuse_viewers(name, target)
        raise ActionError(f"unknown action {name!r}")
    return action(form, acting)
