"""llmux config files (JSON or YAML): parsing into typed specs; writing them back is
config_export's, the specs are config_specs', reading llmux leniently is config_compat's.

The format is llmux 0.5's (`models`, `port`, `policy`, `checkpoint`, ...), plus the fields
later llmux releases added (`eviction`, `checkpoint_path`, `startup_timeout_secs`, `warmup`)
and our own per-model extensions (`aliases`, `engine`, `uds`, `env`, `gpu_ids`, ...).

A key a file leaves out is `None` (or empty) in the spec: "use the registry's default". The
defaults themselves live in one place, the database models, so the spec cannot drift from
them. Every problem in a file is collected, each under its field path, before `ConfigError`
is raised: an operator fixes a file in one pass instead of one error per run.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from .addresses import is_loopback_host
from .config_compat import (
    LLMUX_SLEEP_LEVEL_MAX,
    eviction_form,
    odd_sleep_level_reason,
    plain_json_problem,
    unknown_policy_reason,
)
from .config_export import config_document, dump_config
from .config_specs import (
    ENGINES,
    MODEL_NAME_PATTERN,
    POLICY_TYPES,
    CheckpointSpec,
    ConfigError,
    FieldError,
    Format,
    ModelSpec,
    PolicySpec,
    RegistrySpec,
)
from .config_text import decode_config_text, guess_format
from .eviction_policy import EvictionPolicy, ProcessAction, WeightsAction
from .readiness import probe_setting_error

__all__ = [
    "ENGINES",
    "MODEL_NAME_PATTERN",
    "POLICY_TYPES",
    "SHELL_METACHARACTERS",
    "CheckpointSpec",
    "ConfigError",
    "FieldError",
    "Format",
    "ModelSpec",
    "PolicySpec",
    "RegistrySpec",
    "config_document",
    "dump_config",
    "guess_format",
    "key_path",
    "load_config_file",
    "parse_config",
    "parse_config_text",
    "shell_metacharacter",
]

_MODEL_NAME_RE: Final = re.compile(MODEL_NAME_PATTERN)
_ENV_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLAIN_KEY_RE: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_INT_MAX: Final = 2_147_483_647  # the database's integer columns
_PATH_MAX: Final = 1024  # the database's path columns
_UDS_MAX_BYTES: Final = 107  # sockaddr_un.sun_path is 108 bytes including the NUL


# --- reading values --------------------------------------------------------------------------

_ABSENT: Final = object()


def _type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names.update({list: "a list", dict: "an object", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def key_path(parent: str, key: str) -> str:
    """`key` under `parent` as errors name it: `models.qwen`, or `models["a.b"]`."""
    part = f".{key}" if _PLAIN_KEY_RE.match(key) else f"[{json.dumps(key, ensure_ascii=False)}]"
    return f"{parent}{part}" if parent else part.lstrip(".")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(slots=True)
class _Findings:
    """A parse's problems: errors, and what only --strict refuses (else a notice)."""

    strict: bool
    errors: list[FieldError] = field(default_factory=list)
    notices: list[FieldError] = field(default_factory=list)


class _Section:
    """One mapping of a config file: typed reads that record problems under their paths.
    Its unknown keys are kept in `unknown` (config_compat), or refused when strict."""

    def __init__(
        self,
        data: Mapping[str, Any],
        path: str,
        keys: Iterable[str],
        findings: _Findings,
        *,
        keep_unknown: bool = True,
    ) -> None:
        self.data, self.path, self.findings = data, path, findings
        self.errors = findings.errors
        self.unknown: dict[str, Any] = {}
        allowed = frozenset(keys)
        for key, value in data.items():
            if not isinstance(key, str) or "\x00" in key:
                self.errors.append(FieldError(path or "(top level)", f"key {key!r} is not text"))
            elif key in allowed:
                continue
            elif findings.strict or not keep_unknown:
                self.error(key, "unknown field")
            elif (problem := plain_json_problem(value)) is not None:
                self.error(key, f"unknown field, kept as it is, but its value {problem}")
            else:
                self.unknown[key] = value

    def at(self, key: str) -> str:
        return key_path(self.path, key)

    def error(self, key: str, reason: str) -> None:
        self.errors.append(FieldError(self.at(key), reason))

    def lenient(self, key: str, reason: str) -> None:
        """What llmux accepts: a notice, or an error when the parse is strict."""
        found = FieldError(self.at(key), reason)
        (self.errors if self.findings.strict else self.findings.notices).append(found)

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, expected: str, check: Callable[[Any], bool]) -> Any:
        value = self.data.get(key, _ABSENT)
        if value is _ABSENT:
            return _ABSENT
        if not check(value):
            self.error(key, f"expected {expected}, got {_type_name(value)}")
            return _ABSENT
        return value

    def integer(self, key: str, *, low: int = 0, high: int = _INT_MAX) -> int | None:
        value = self._get(key, "an integer", _is_int)
        if value is _ABSENT:
            return None
        if not low <= value <= high:
            self.error(key, f"{value} is out of range {low}-{high}")
            return None
        return int(value)

    def number(self, key: str) -> float | None:
        value = self._get(key, "a number", lambda v: _is_int(v) or isinstance(v, float))
        if value is _ABSENT:
            return None
        if not math.isfinite(value) or value < 0:
            self.error(key, f"{value} must be a finite number >= 0")
            return None
        return float(value)

    def boolean(self, key: str) -> bool | None:
        value = self._get(key, "true or false", lambda v: isinstance(v, bool))
        return None if value is _ABSENT else bool(value)

    def text(self, key: str, *, max_length: int = _PATH_MAX, blank: bool = True) -> str | None:
        value = self._get(key, "a string", lambda v: isinstance(v, str))
        if value is _ABSENT:
            return None
        if "\x00" in value:
            self.error(key, "contains a NUL byte")
        elif len(value) > max_length:
            self.error(key, f"longer than {max_length} characters")
        elif not blank and not value.strip():
            self.error(key, "must not be empty")
        else:
            return str(value)
        return None

    def choice(self, key: str, options: Iterable[str]) -> str | None:
        value = self.text(key)
        options = tuple(options)
        if value is not None and value not in options:
            self.error(key, f"unknown value {value!r}; expected one of {', '.join(options)}")
            return None
        return value

    def section(
        self, key: str, keys: Iterable[str], *, keep_unknown: bool = True
    ) -> _Section | None:
        value = self._get(key, "an object", lambda v: isinstance(v, dict))
        if value is _ABSENT:
            return None
        return _Section(value, self.at(key), keys, self.findings, keep_unknown=keep_unknown)

    def strings(self, key: str, *, what: str = "a list of strings") -> tuple[str, ...]:
        value = self._get(key, what, lambda v: isinstance(v, list))
        if value is _ABSENT:
            return ()
        items: list[str] = []
        for index, item in enumerate(value):
            where = f"{self.at(key)}[{index}]"
            if not isinstance(item, str):
                self.errors.append(FieldError(where, f"expected a string, got {_type_name(item)}"))
            elif "\x00" in item:
                self.errors.append(FieldError(where, "contains a NUL byte"))
            else:
                items.append(item)
        return tuple(items)

    def integers(self, key: str) -> tuple[int, ...]:
        value = self._get(key, "a list of integers", lambda v: isinstance(v, list))
        if value is _ABSENT:
            return ()
        items: list[int] = []
        for index, item in enumerate(value):
            where = f"{self.at(key)}[{index}]"
            if not _is_int(item) or not 0 <= item <= _INT_MAX:
                self.errors.append(FieldError(where, "expected a non-negative integer"))
            elif item in items:
                self.errors.append(FieldError(where, f"{item} is listed twice"))
            else:
                items.append(item)
        return tuple(items)


# --- sections --------------------------------------------------------------------------------

_EVICTION_KEYS: Final = ("weights", "process")
# Config keys are the spec's field names, plus llmux 0.5's `sleep_level` beside `eviction`.
_POLICY_KEYS: Final = frozenset(f.name for f in fields(PolicySpec)) | {"sleep_level"}
# `object_store` (later llmux) is known in order to be refused: it carries credentials.
_CHECKPOINT_KEYS: Final = frozenset(f.name for f in fields(CheckpointSpec)) | {"object_store"}
_MODEL_KEYS: Final = frozenset(f.name for f in fields(ModelSpec)) - {"name", "unknown_keys"} | {
    "sleep_level"
}
_TOP_KEYS: Final = frozenset(f.name for f in fields(RegistrySpec)) - {
    "unknown_keys",
    "eviction_form",
    "notices",
}


def _sleep_level(sec: _Section) -> int | None:
    """llmux 0.5 reads any u8: a level outside 1-5 means 1 (a notice, or strict's error)."""
    value = sec._get("sleep_level", "an integer", _is_int)
    if value is _ABSENT:
        return None
    if not 0 <= value <= LLMUX_SLEEP_LEVEL_MAX:
        sec.error("sleep_level", f"{value} is out of range 1-5")
        return None
    if not 1 <= value <= 5:
        sec.lenient("sleep_level", odd_sleep_level_reason(value))
        return 1
    return int(value)


def _eviction(sec: _Section) -> EvictionPolicy | None:
    """`sleep_level` (llmux 0.5) and/or `eviction{weights, process}` (later llmux)."""
    level = _sleep_level(sec)
    by_level = EvictionPolicy.from_sleep_level(level) if level is not None else None
    sub = sec.section("eviction", _EVICTION_KEYS, keep_unknown=False)
    if sub is None:
        return by_level
    weights = sub.choice("weights", (a.value for a in WeightsAction))
    process = sub.choice("process", (a.value for a in ProcessAction))
    for key, value in (("weights", weights), ("process", process)):
        if value is None and not sub.has(key):
            sub.error(key, "required")
    if weights is None or process is None:
        return by_level
    if weights == WeightsAction.RETAIN and process == ProcessAction.KEEP_RUNNING:
        sec.error("eviction", "weights=retain with process=keep_running frees no GPU memory")
        return by_level
    policy = EvictionPolicy(WeightsAction(weights), ProcessAction(process))
    if by_level is not None and by_level != policy:
        sec.lenient(
            "eviction",
            f"disagrees with sleep_level {level} ({by_level.label} vs {policy.label}): "
            "eviction is used, as llmux 0.6 and later read only eviction",
        )
    return policy


def _policy_type(sec: _Section) -> str | None:
    """llmux runs fifo for a policy it does not know (a notice, or strict's error)."""
    value = sec.text("policy_type")
    if value is not None and value not in POLICY_TYPES:
        sec.lenient("policy_type", unknown_policy_reason(value))
        return None
    return value


def _policy(top: _Section, unknown_keys: dict[str, Any]) -> PolicySpec:
    sec = top.section("policy", _POLICY_KEYS)
    if sec is None:
        return PolicySpec()
    if sec.unknown:
        unknown_keys["policy"] = sec.unknown
    return PolicySpec(
        policy_type=_policy_type(sec),
        request_timeout_secs=sec.integer("request_timeout_secs"),
        drain_before_switch=sec.boolean("drain_before_switch"),
        eviction=_eviction(sec),
        min_active_secs=sec.integer("min_active_secs"),
        coalesce_window_ms=sec.integer("coalesce_window_ms"),
        amortization_factor=sec.number("amortization_factor"),
        max_wait_secs=sec.integer("max_wait_secs"),
        tick_interval_ms=sec.integer("tick_interval_ms"),
        min_quantum_ms=sec.integer("min_quantum_ms"),
    )


def _checkpoint(top: _Section, unknown_keys: dict[str, Any]) -> CheckpointSpec:
    sec = top.section("checkpoint", _CHECKPOINT_KEYS)
    if sec is None:
        return CheckpointSpec()
    if sec.has("object_store"):
        sec.error(
            "object_store",
            "not accepted: it holds credentials, and secrets come only from the environment",
        )
    if sec.unknown:
        unknown_keys["checkpoint"] = sec.unknown
    return CheckpointSpec(
        criu_path=sec.text("criu_path", blank=False),
        cuda_plugin_dir=sec.text("cuda_plugin_dir"),
        images_dir=sec.text("images_dir"),
        cuda_checkpoint_path=sec.text("cuda_checkpoint_path"),
        keep_images=sec.boolean("keep_images"),
    )


def _listen(sec: _Section) -> tuple[int | None, str | None, str | None]:
    """Exactly one of a loopback TCP port or an absolute unix socket path."""
    port = sec.integer("port", low=1, high=65535)
    uds = sec.text("uds", blank=False)
    host = sec.text("host", max_length=64, blank=False)
    if uds is not None and not os.path.isabs(uds):
        sec.error("uds", f"{uds!r} must be an absolute path")
    elif uds is not None and len(os.fsencode(uds)) > _UDS_MAX_BYTES:
        sec.error("uds", f"longer than {_UDS_MAX_BYTES} bytes (the unix socket path limit)")
    if host is not None and not is_loopback_host(host):
        sec.error("host", f"{host!r} is not loopback: engines listen on loopback or a socket")
    if sec.has("port") and sec.has("uds"):
        sec.error("uds", "give either port or uds, not both")
    elif not sec.has("port") and not sec.has("uds"):
        sec.error("port", "required (or give uds, a unix socket path)")
    elif host is not None and sec.has("uds"):
        sec.error("host", "only applies to a TCP port, not to a unix socket")
    return port, uds, host


def _probe(sec: _Section, engine: str | None) -> str | Mapping[str, Any] | None:
    value = sec.data.get("probe", _ABSENT)
    if value is _ABSENT:
        return None
    problem = probe_setting_error(value, generic=engine == "generic")
    if problem is not None:
        sec.error("probe", problem)
        return None
    return MappingProxyType(dict(value)) if isinstance(value, dict) else str(value)


def _names(sec: _Section, key: str) -> tuple[str, ...]:
    names = sec.strings(key)
    for index, name in enumerate(names):
        if not _MODEL_NAME_RE.match(name):
            sec.errors.append(FieldError(f"{sec.at(key)}[{index}]", f"invalid name {name!r}"))
    return names


def _env(sec: _Section) -> Mapping[str, str]:
    raw = sec._get("env", "an object of strings", lambda v: isinstance(v, dict))
    env: dict[str, str] = {}
    for name, value in (raw if raw is not _ABSENT else {}).items():
        where = key_path(sec.at("env"), str(name))
        if not isinstance(name, str) or not _ENV_NAME_RE.match(name):
            sec.errors.append(FieldError(where, "invalid variable name"))
        elif not isinstance(value, str) or "\x00" in value:
            sec.errors.append(FieldError(where, "expected a string without NUL bytes"))
        else:
            env[name] = value
    return MappingProxyType(env)


# What only a shell would make sense of: command separators, pipes, substitutions,
# redirections and line breaks. Quotes, braces and colons stay allowed (JSON values).
SHELL_METACHARACTERS: Final = (";", "|", "&", "`", "$(", "${", "<", ">", "\n", "\r")


def shell_metacharacter(arg: str) -> str | None:
    """The first shell construct in `arg`, or None."""
    return next((m for m in SHELL_METACHARACTERS if m in arg), None)


def _extra_args(sec: _Section) -> tuple[str, ...]:
    extra_args = sec.strings(
        "extra_args", what="a list of strings (an argv list, not a shell line)"
    )
    for index, arg in enumerate(extra_args):
        found = shell_metacharacter(arg)
        if found is not None:
            sec.errors.append(
                FieldError(
                    f"{sec.at('extra_args')}[{index}]",
                    f"contains {found!r}: arguments go to the engine as argv items, never "
                    "through a shell, so a shell construct there is a mistake or an attack",
                )
            )
    return extra_args


def _model(name: str, data: object, path: str, findings: _Findings) -> ModelSpec | None:
    errors = findings.errors
    if not _MODEL_NAME_RE.match(name):
        errors.append(FieldError(path, f"invalid model name {name!r} (see MODEL_NAME_PATTERN)"))
    if not isinstance(data, dict):
        errors.append(FieldError(path, f"expected an object, got {_type_name(data)}"))
        return None
    sec = _Section(data, path, _MODEL_KEYS, findings)
    model_path = sec.text("model_path", blank=False)
    if not sec.has("model_path"):
        sec.error("model_path", "required")
    port, uds, host = _listen(sec)
    engine = sec.choice("engine", ENGINES)
    command = sec.strings("command")
    if engine == "generic" and not command:
        sec.error("command", "required (a non-empty argv list) for engine generic")
    eviction = _eviction(sec)
    if engine == "generic" and eviction is not None and eviction.vllm_sleep_level is not None:
        key = "sleep_level" if sec.has("sleep_level") else "eviction"
        sec.error(key, "a generic engine has no vLLM sleep endpoint: keep weights=retain")
    extra_args = _extra_args(sec)
    return ModelSpec(
        name=name,
        model_path=model_path or "",
        port=port,
        uds=uds,
        host=host,
        extra_args=extra_args,
        eviction=eviction,
        checkpoint_path=sec.text("checkpoint_path", blank=False),
        startup_timeout_secs=sec.integer("startup_timeout_secs", low=1),
        drain_timeout_secs=sec.integer("drain_timeout_secs"),
        warmup=sec.boolean("warmup"),
        aliases=tuple(sorted(_names(sec, "aliases"))),
        engine=engine,
        gpu_ids=sec.integers("gpu_ids"),
        env=_env(sec),
        command=command,
        served_model_name=sec.text("served_model_name", max_length=256, blank=False),
        probe=_probe(sec, engine),
        rewrite_model=sec.boolean("rewrite_model"),
        description=sec.text("description", max_length=500),
        priority=sec.integer("priority", low=-_INT_MAX - 1),
        enabled=sec.boolean("enabled"),
        unknown_keys=MappingProxyType(sec.unknown),
    )


def _check_unique(models: Iterable[ModelSpec], top: _Section, errors: list[FieldError]) -> None:
    """Names and aliases are one namespace; no two listeners share a port or a socket."""
    owner: dict[str, str] = {m.name: f"the name of model {m.name}" for m in models}
    ports: dict[int, str] = {}
    for key in ("port", "metrics_port", "admin_port"):
        if _is_int(top.data.get(key)):
            ports.setdefault(top.data[key], f"the top-level {key}")
    sockets: dict[str, str] = {}
    for model in models:
        path = key_path("models", model.name)
        for index, alias in enumerate(model.aliases):
            taken = owner.setdefault(alias, f"an alias of model {model.name}")
            if taken != f"an alias of model {model.name}" or alias == model.name:
                reason = f"{alias!r} is already {taken}"
                reason = reason if alias != model.name else "repeats the model's own name"
                errors.append(FieldError(f"{path}.aliases[{index}]", reason))
        if model.port is not None:
            taken = ports.setdefault(model.port, f"model {model.name}")
            if taken != f"model {model.name}":
                errors.append(
                    FieldError(f"{path}.port", f"{model.port} is already used by {taken}")
                )
        if model.uds is not None:
            taken = sockets.setdefault(model.uds, f"model {model.name}")
            if taken != f"model {model.name}":
                errors.append(FieldError(f"{path}.uds", f"{model.uds} is already used by {taken}"))


def _top_port(top: _Section, key: str) -> int | None:
    if top.data.get(key, 1) is None and key == "admin_port":
        return None  # later llmux writes `admin_port: null` for "no admin API"
    # llmux: metrics_port 0 disables metrics; kept as 0, as llmux's default is 9090.
    return top.integer(key, low=0 if key == "metrics_port" else 1, high=65535)


def _models(top: _Section) -> list[ModelSpec]:
    raw = top._get("models", "an object", lambda v: isinstance(v, dict))
    if not top.has("models"):
        top.error("models", "required")
    models: list[ModelSpec] = []
    for name, body in (raw if isinstance(raw, dict) else {}).items():
        if not isinstance(name, str):
            top.errors.append(FieldError("models", f"model name {name!r} is not text"))
            continue
        model = _model(name, body, key_path("models", name), top.findings)
        if model is not None:
            models.append(model)
    _check_unique(models, top, top.errors)
    return sorted(models, key=lambda m: m.name)


def parse_config(data: object, *, strict: bool = False) -> RegistrySpec:
    """Validate a decoded config document; raise ConfigError listing every problem.

    What llmux accepts but a strict reading refuses (unknown keys, a sleep_level outside
    1-5, an unknown policy_type) is kept or read as llmux reads it, with a notice in the
    spec; `strict` refuses it instead (config_compat)."""
    if not isinstance(data, dict):
        raise ConfigError(
            [FieldError("(top level)", f"expected an object, got {_type_name(data)}")]
        )
    findings = _Findings(strict=strict)
    top = _Section(data, "", _TOP_KEYS, findings)
    unknown_keys: dict[str, Any] = dict(top.unknown)
    raw_models = data.get("models")
    sections = [data.get("policy"), *(raw_models.values() if isinstance(raw_models, dict) else ())]
    spec = RegistrySpec(
        models=tuple(_models(top)),
        port=top.integer("port", low=1, high=65535),
        metrics_port=_top_port(top, "metrics_port"),
        admin_port=_top_port(top, "admin_port"),
        vllm_command=top.text("vllm_command", blank=False),
        warmup=top.boolean("warmup"),
        startup_timeout_secs=top.integer("startup_timeout_secs", low=1),
        policy=_policy(top, unknown_keys),
        checkpoint=_checkpoint(top, unknown_keys),
        unknown_keys=MappingProxyType(unknown_keys),
        eviction_form=eviction_form(sections),
        notices=tuple(findings.notices),
    )
    if findings.errors:
        raise ConfigError(findings.errors)
    return spec


# --- files -----------------------------------------------------------------------------------


def parse_config_text(text: str, fmt: Format, *, strict: bool = False) -> RegistrySpec:
    """Decode and validate config text in the given format."""
    return parse_config(decode_config_text(text, fmt), strict=strict)


def load_config_file(path: str | os.PathLike[str], *, strict: bool = False) -> RegistrySpec:
    """Read, decode and validate a config file; ConfigError (or OSError) if it cannot be."""
    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (byte {exc.start}): is this a config file?"
        raise ConfigError([FieldError("(file)", reason)]) from None
    return parse_config_text(text, guess_format(file, text), strict=strict)
