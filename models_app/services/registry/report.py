"""What a registry write does, model by model and key by key (or would do, on a dry run)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

Action = Literal["created", "updated", "unchanged", "kept", "removed"]


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One config key whose stored value an import changes (or would change)."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"


@dataclass(frozen=True, slots=True)
class ModelOutcome:
    """What an import does to one model."""

    name: str
    action: Action
    changes: tuple[FieldChange, ...] = ()


@dataclass(frozen=True, slots=True)
class ImportReport:
    """Everything an import did, or would do on a dry run."""

    models: tuple[ModelOutcome, ...]
    settings_changes: tuple[FieldChange, ...]
    dry_run: bool
    warnings: tuple[str, ...] = ()

    def names(self, action: Action) -> list[str]:
        return [m.name for m in self.models if m.action == action]

    def outcome(self, name: str) -> ModelOutcome:
        return next(m for m in self.models if m.name == name)

    @property
    def absent(self) -> list[str]:
        """Models in the database but not in the file (kept, or removed with prune)."""
        return [m.name for m in self.models if m.action in ("kept", "removed")]

    @property
    def changed(self) -> bool:
        actions = {m.action for m in self.models}
        return bool(self.settings_changes) or bool(actions & {"created", "updated", "removed"})

    def lines(self) -> list[str]:
        out = [_outcome_line(m) for m in self.models]
        out += [f"settings  {change}" for change in self.settings_changes]
        if not self.settings_changes:
            out.append("settings  unchanged")
        out += [f"warning   {w}" for w in self.warnings]
        actions: tuple[Action, ...] = ("created", "updated", "unchanged", "removed")
        counts = ", ".join(f"{len(self.names(a))} {a}" for a in actions)
        kept = self.names("kept")
        tail = f", {len(kept)} absent from the file and kept (--prune removes them)" if kept else ""
        suffix = " (dry run: nothing was written)" if self.dry_run else ""
        return [*out, f"models: {counts}{tail}{suffix}"]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _outcome_line(outcome: ModelOutcome) -> str:
    head = f"{outcome.action:<9} {outcome.name}"
    if outcome.action == "kept":
        head += " (in the database, not in the file)"
    return "\n".join([head, *(f"            {change}" for change in outcome.changes)])


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value, ensure_ascii=False, default=str)
