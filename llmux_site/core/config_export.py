"""A config spec written back as llmux config text (`llmux_export`, the API's definitions).

Values left unset are left out, eviction is written in the form its file used (llmux 0.5's
`sleep_level` or 0.6's `eviction`), and unknown keys kept from the file come back where the
file had them, so import -> export -> import is a fixed point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Final

from .config_compat import merge_unknown_keys
from .config_specs import (
    CheckpointSpec,
    EvictionForm,
    Format,
    ModelSpec,
    PolicySpec,
    RegistrySpec,
)
from .config_text import encode_config_text, is_scalar
from .eviction_policy import EvictionPolicy


def _eviction_fields(policy: EvictionPolicy, form: EvictionForm | None) -> dict[str, Any]:
    """llmux 0.5's `sleep_level` where the policy is one, else `eviction{weights, process}`;
    always the latter for a file of llmux 0.6 or later, which ignores `sleep_level`."""
    if policy.sleep_level is not None and form != "eviction":
        return {"sleep_level": policy.sleep_level}
    return {"eviction": {"weights": policy.weights.value, "process": policy.process.value}}


def _document(
    spec: ModelSpec | PolicySpec | CheckpointSpec, form: EvictionForm | None = None
) -> dict[str, Any]:
    """One section as plain data in field order, leaving out everything unset; a model's
    unknown keys kept from its file come last."""
    doc: dict[str, Any] = {}
    for item in fields(spec):
        value = getattr(spec, item.name)
        if item.name in ("name", "unknown_keys") or value is None:
            continue
        if not value and not is_scalar(value):
            continue
        if isinstance(value, EvictionPolicy):
            doc.update(_eviction_fields(value, form))
        elif isinstance(value, Mapping):
            doc[item.name] = dict(sorted(value.items()))
        elif isinstance(value, tuple):
            doc[item.name] = sorted(value) if item.name == "aliases" else list(value)
        else:
            doc[item.name] = value
    return merge_unknown_keys(doc, spec.unknown_keys) if isinstance(spec, ModelSpec) else doc


_TOP_SCALARS: Final = (
    "port",
    "metrics_port",
    "admin_port",
    "vllm_command",
    "warmup",
    "startup_timeout_secs",
)


def config_document(spec: RegistrySpec) -> dict[str, Any]:
    """The spec as a plain mapping in llmux's layout, leaving out everything unset, with the
    unknown keys kept from its file where the file had them."""
    models = sorted(spec.models, key=lambda m: m.name)
    form = spec.eviction_form
    doc: dict[str, Any] = {"models": {m.name: _document(m, form) for m in models}}
    for key in _TOP_SCALARS:
        if getattr(spec, key) is not None:
            doc[key] = getattr(spec, key)
    for key, section in (("checkpoint", spec.checkpoint), ("policy", spec.policy)):
        if body := _document(section, form):
            doc[key] = body
    return merge_unknown_keys(doc, spec.unknown_keys)


def dump_config(spec: RegistrySpec, fmt: Format = "json") -> str:
    """The spec as llmux config text (JSON with 2-space indent, or block-style YAML)."""
    return encode_config_text(config_document(spec), fmt)
