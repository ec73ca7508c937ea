"""Rules a model definition follows beyond its own fields, checked on every registry write.

Two of them: what only an administrator may decide about an engine (its program,
environment, code and model source: llmux_site.core.engine_trust), and which ports an
engine may never take, whoever defines it (llmux's own, its database's and Redis's, and
LLMUX_DENIED_PORTS).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from urllib.parse import urlsplit

from django.conf import settings

from llmux_site.core.config import FieldError, ModelSpec, RegistrySpec
from llmux_site.core.engine_trust import Privilege, privileges
from llmux_site.core.launch import SIMULATOR_SCRIPT
from models_app.services import paths

ADMIN_ONLY = "only an administrator may set this (docs/API.md: engine settings operators may set)"


def is_local_path(value: str) -> bool:
    """An absolute path under LLMUX_PATH_ROOTS."""
    return value.startswith("/") and paths.confine(value, "") is None


def runs_simulator(spec: ModelSpec, vllm_command: str | None) -> bool:
    """Whether the model's engine is llmux's simulator (its model_path is only a label)."""
    if spec.engine == "simulator":
        return True
    if spec.engine == "generic" or spec.command:
        return False
    words = shlex.split(vllm_command or "vllm")
    return bool(words) and os.path.basename(words[0]) == SIMULATOR_SCRIPT


def model_privileges(spec: ModelSpec, vllm_command: str | None) -> frozenset[Privilege]:
    """Every administrator-only setting that `spec` uses."""
    return privileges(
        engine=spec.engine,
        command=spec.command,
        model_path=spec.model_path,
        extra_args=spec.extra_args,
        env=spec.env,
        runs_simulator=runs_simulator(spec, vllm_command),
        is_local_path=is_local_path,
    )


def added_privileges(
    new: ModelSpec, old: ModelSpec | None, *, new_command: str | None, old_command: str | None
) -> list[FieldError]:
    """What a non-administrator's change adds that only an administrator may set.

    Privileges the current definition already has (an administrator set them) may stay,
    so an operator can still tune a model an administrator configured.
    """
    before = model_privileges(old, old_command) if old is not None else frozenset()
    added = model_privileges(new, new_command) - before
    where = f"models.{new.name}"
    return [
        FieldError(f"{where}.{privilege.field}", f"{privilege.what}: {ADMIN_ONLY}")
        for privilege in sorted(added)
    ]


def restricted_errors(
    spec: RegistrySpec,
    changed: Iterable[ModelSpec],
    before: RegistrySpec,
    changed_settings: Iterable[str],
) -> list[FieldError]:
    """A non-administrator's change of the registry from `before` to `spec`: it changes no
    registry-wide setting and adds no engine privilege to the `changed` models."""
    errors = [FieldError(key, f"a registry-wide setting: {ADMIN_ONLY}") for key in changed_settings]
    old = {model.name: model for model in before.models}
    for model in changed:
        errors += added_privileges(
            model,
            old.get(model.name),
            new_command=spec.vllm_command,
            old_command=before.vllm_command,
        )
    return errors


def reserved_ports() -> dict[int, str]:
    """Ports no engine may listen on, each with the reason."""
    reserved = dict.fromkeys(settings.LLMUX_DENIED_PORTS, "in LLMUX_DENIED_PORTS")
    for url, what in ((settings.DATABASE_URL, "the database"), (settings.REDIS_URL, "Redis")):
        port = urlsplit(url).port if url else None
        if port is not None:
            reserved[port] = f"{what}'s port"
    if settings.LLMUX_BIND_PORT is not None:
        reserved[settings.LLMUX_BIND_PORT] = "the port llmux itself serves on"
    return reserved


def port_errors(models: Iterable[ModelSpec]) -> list[FieldError]:
    """Engine ports that are reserved (a clash with the file's own top-level ports is
    parse_config's to report)."""
    reserved = reserved_ports()
    return [
        FieldError(f"models.{model.name}.port", f"{model.port} is {reserved[model.port]}")
        for model in models
        if model.port is not None and model.port in reserved
    ]
