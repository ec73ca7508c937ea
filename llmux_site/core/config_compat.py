"""What llmux accepts that a strict reading would refuse, and how it survives an export.

llmux (0.5 to 0.9) ignores keys it does not know, reads any `sleep_level` from 0 to 255
(other than 2-5 means 1) and runs fifo for any `policy_type` it does not know. A config
file it accepts imports here unchanged: unknown keys are kept as they are and written back
on export, the odd values are read as llmux reads them, and an import reports each once;
`--strict` refuses them instead. The fields llmux has that this project does not use are
accepted, kept through export and reported as not used. docs/CONFIG.md has the rules.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

from .config_specs import EvictionForm, RegistrySpec
from .eviction_policy import EvictionPolicy, PolicyError

# Sections whose unknown keys the registry keeps under their own name.
UNKNOWN_KEY_SECTIONS: Final = ("policy", "checkpoint")

# llmux's fields that this project stores but does not act on, with what does it instead
# (an import names them once; a field that comes into use leaves this table).
UNUSED_FIELDS: Final = {
    "port": "the web port is `llmux serve --port`",
}

LLMUX_SLEEP_LEVEL_MAX: Final = 255  # llmux 0.5 reads sleep_level as a u8


def odd_sleep_level_reason(level: int) -> str:
    return f"{level} is not one of llmux's levels 1-5; read as 1, as llmux 0.5 reads it"


def unknown_policy_reason(value: str) -> str:
    return f"unknown policy {value!r}: llmux runs fifo for it, and so does this llmux"


def plain_json_problem(value: object) -> str | None:
    """Why `value` cannot be kept as JSON data in the database, or None when it can."""
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "is not a finite number"
    if isinstance(value, str):
        return "contains a NUL byte" if "\x00" in value else None
    if isinstance(value, list):
        return next(filter(None, map(plain_json_problem, value)), None)
    if isinstance(value, dict):
        if not all(isinstance(key, str) and "\x00" not in key for key in value):
            return "has a key that is not text"
        return next(filter(None, map(plain_json_problem, value.values())), None)
    return f"is not plain JSON data ({type(value).__name__}; quote it in YAML)"


def eviction_form(sections: Iterable[object]) -> EvictionForm | None:
    """`eviction` when a section of a file writes as an `eviction` object a policy that a
    `sleep_level` could name (a file for llmux 0.6 or later, which ignores sleep_level),
    else `sleep_level` when a section uses that; None when the file does not tell."""
    found = [s for s in sections if isinstance(s, dict)]
    if any(_level_as_object(s) for s in found if "sleep_level" not in s):
        return "eviction"
    return "sleep_level" if any("sleep_level" in s for s in found) else None


def _level_as_object(section: Mapping[str, Any]) -> bool:
    value = section.get("eviction")
    if not isinstance(value, dict):
        return False
    try:
        policy = EvictionPolicy.parse(str(value.get("weights")), str(value.get("process")))
    except PolicyError:
        return False  # the parse reports it
    return policy.sleep_level is not None


def merge_unknown_keys(document: dict[str, Any], unknown_keys: Mapping[str, Any]) -> dict[str, Any]:
    """`document` with the kept unknown keys added back where the file had them; a known
    key always wins over an unknown one of the same name."""
    for key, value in unknown_keys.items():
        if key in UNKNOWN_KEY_SECTIONS and isinstance(value, dict):
            section = document.setdefault(key, {})
            for inner, inner_value in value.items():
                section.setdefault(inner, inner_value)
        else:
            document.setdefault(key, value)
    return document


def unknown_paths(spec: RegistrySpec) -> list[str]:
    """The dotted path of every unknown key `spec` keeps."""
    found: list[str] = []
    for key, value in spec.unknown_keys.items():
        if key in UNKNOWN_KEY_SECTIONS and isinstance(value, dict):
            found += [f"{key}.{inner}" for inner in value]
        else:
            found.append(key)
    for model in spec.models:
        found += [f"models.{model.name}.{key}" for key in model.unknown_keys]
    return found


def import_notes(spec: RegistrySpec) -> list[str]:
    """What an import reports once about how it read `spec`: unknown keys kept, llmux's
    fields not used here, and each value read leniently."""
    notes: list[str] = []
    unknown = unknown_paths(spec)
    if unknown:
        notes.append(
            f"unknown keys kept and written back on export (llmux ignores them; --strict "
            f"refuses them): {', '.join(unknown)}"
        )
    unused = [
        f"{key} ({why})" for key, why in UNUSED_FIELDS.items() if getattr(spec, key) is not None
    ]
    if unused:
        notes.append(f"not used by this llmux, kept for export: {'; '.join(unused)}")
    return notes + [str(notice) for notice in spec.notices]
