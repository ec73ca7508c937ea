"""llmux config files (JSON or YAML): strict parsing into typed specs, and writing them back.

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
from typing import Any, Final, Literal, NamedTuple

import yaml

from .addresses import is_loopback_host
from .eviction_policy import EvictionPolicy, ProcessAction, WeightsAction
from .readiness import probe_setting_error

# Kept equal to models_app's MODEL_NAME_RE (a test pins it): this package imports no Django.
MODEL_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
ENGINES: Final = ("vllm", "simulator", "generic")
POLICY_TYPES: Final = ("fifo", "cost_aware", "time_slice")
Format = Literal["json", "yaml"]

_MODEL_NAME_RE: Final = re.compile(MODEL_NAME_PATTERN)
_ENV_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLAIN_KEY_RE: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_INT_MAX: Final = 2_147_483_647  # the database's integer columns
_PATH_MAX: Final = 1024  # the database's path columns
_UDS_MAX_BYTES: Final = 107  # sockaddr_un.sun_path is 108 bytes including the NUL


class FieldError(NamedTuple):
    """One problem in a config file: where (a dotted field path) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class ConfigError(ValueError):
    """A config file that cannot be applied; `errors` holds every problem found."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.errors)
        head = f"invalid llmux config ({count} error{'s' if count != 1 else ''}):"
        return "\n".join([head, *(f"  {error}" for error in self.errors)])


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model as a config file describes it; `None` means "the registry default"."""

    name: str
    model_path: str
    port: int | None = None
    uds: str | None = None
    host: str | None = None
    eviction: EvictionPolicy | None = None
    extra_args: tuple[str, ...] = ()
    checkpoint_path: str | None = None
    startup_timeout_secs: int | None = None
    drain_timeout_secs: int | None = None
    warmup: bool | None = None
    aliases: tuple[str, ...] = ()
    engine: str | None = None
    gpu_ids: tuple[int, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    command: tuple[str, ...] = ()
    served_model_name: str | None = None
    # The readiness probe: a name (readiness.PROBE_KINDS) or, for a generic engine, an
    # object {path, body}; None picks one by the engine (docs/ENGINES.md).
    probe: str | Mapping[str, Any] | None = None
    rewrite_model: bool | None = None
    description: str | None = None
    priority: int | None = None
    enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """The `policy` section: switch scheduling and the default eviction policy."""

    policy_type: str | None = None
    request_timeout_secs: int | None = None
    drain_before_switch: bool | None = None
    eviction: EvictionPolicy | None = None
    min_active_secs: int | None = None
    coalesce_window_ms: int | None = None
    amortization_factor: float | None = None
    max_wait_secs: int | None = None
    tick_interval_ms: int | None = None
    min_quantum_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CheckpointSpec:
    """The `checkpoint` section: CRIU and CUDA checkpoint tools and where images go."""

    criu_path: str | None = None
    cuda_plugin_dir: str | None = None
    images_dir: str | None = None
    cuda_checkpoint_path: str | None = None
    keep_images: bool | None = None


@dataclass(frozen=True, slots=True)
class RegistrySpec:
    """A whole config file: the models (sorted by name) and the registry-wide settings."""

    models: tuple[ModelSpec, ...] = ()
    port: int | None = None
    metrics_port: int | None = None
    admin_port: int | None = None
    vllm_command: str | None = None
    warmup: bool | None = None
    policy: PolicySpec = PolicySpec()
    checkpoint: CheckpointSpec = CheckpointSpec()

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise KeyError(name)


# --- reading values --------------------------------------------------------------------------

_ABSENT: Final = object()


def _type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names.update({list: "a list", dict: "an object", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def _key_path(parent: str, key: str) -> str:
    part = f".{key}" if _PLAIN_KEY_RE.match(key) else f"[{json.dumps(key, ensure_ascii=False)}]"
    return f"{parent}{part}" if parent else part.lstrip(".")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Section:
    """One mapping of a config file: typed reads that record problems under their paths."""

    def __init__(
        self, data: Mapping[str, Any], path: str, keys: Iterable[str], errors: list[FieldError]
    ) -> None:
        self.data, self.path, self.errors = data, path, errors
        allowed = frozenset(keys)
        for key in data:
            if not isinstance(key, str):
                self.errors.append(FieldError(path or "(top level)", f"key {key!r} is not text"))
            elif key not in allowed:
                self.error(key, "unknown field")

    def at(self, key: str) -> str:
        return _key_path(self.path, key)

    def error(self, key: str, reason: str) -> None:
        self.errors.append(FieldError(self.at(key), reason))

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

    def section(self, key: str, keys: Iterable[str]) -> _Section | None:
        value = self._get(key, "an object", lambda v: isinstance(v, dict))
        return None if value is _ABSENT else _Section(value, self.at(key), keys, self.errors)

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
_CHECKPOINT_KEYS: Final = frozenset(f.name for f in fields(CheckpointSpec))
_MODEL_KEYS: Final = frozenset(f.name for f in fields(ModelSpec)) - {"name"} | {"sleep_level"}
_TOP_KEYS: Final = frozenset(f.name for f in fields(RegistrySpec))


def _eviction(sec: _Section) -> EvictionPolicy | None:
    """`sleep_level` (llmux 0.5) and/or `eviction{weights, process}` (later llmux)."""
    level = sec.integer("sleep_level", low=1, high=5) if sec.has("sleep_level") else None
    by_level = EvictionPolicy.from_sleep_level(level) if level is not None else None
    sub = sec.section("eviction", _EVICTION_KEYS)
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
        sec.error(
            "eviction",
            f"disagrees with sleep_level {level} ({by_level.label} vs {policy.label})",
        )
    return policy


def _policy(top: _Section) -> PolicySpec:
    sec = top.section("policy", _POLICY_KEYS)
    if sec is None:
        return PolicySpec()
    return PolicySpec(
        policy_type=sec.choice("policy_type", POLICY_TYPES),
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


def _checkpoint(top: _Section) -> CheckpointSpec:
    sec = top.section("checkpoint", _CHECKPOINT_KEYS)
    if sec is None:
        return CheckpointSpec()
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
        where = _key_path(sec.at("env"), str(name))
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


def _model(name: str, data: object, path: str, errors: list[FieldError]) -> ModelSpec | None:
    if not _MODEL_NAME_RE.match(name):
        errors.append(FieldError(path, f"invalid model name {name!r} (see MODEL_NAME_PATTERN)"))
    if not isinstance(data, dict):
        errors.append(FieldError(path, f"expected an object, got {_type_name(data)}"))
        return None
    sec = _Section(data, path, _MODEL_KEYS, errors)
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
        path = _key_path("models", model.name)
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
    low = 0 if key == "metrics_port" else 1
    value = top.integer(key, low=low, high=65535)
    return None if value == 0 else value  # llmux 0.5: metrics_port 0 disables metrics


def parse_config(data: object) -> RegistrySpec:
    """Validate a decoded config document; raise ConfigError listing every problem."""
    errors: list[FieldError] = []
    if not isinstance(data, dict):
        raise ConfigError(
            [FieldError("(top level)", f"expected an object, got {_type_name(data)}")]
        )
    top = _Section(data, "", _TOP_KEYS, errors)
    raw_models = top._get("models", "an object", lambda v: isinstance(v, dict))
    if not top.has("models"):
        top.error("models", "required")
    models: list[ModelSpec] = []
    for name, body in (raw_models if isinstance(raw_models, dict) else {}).items():
        if not isinstance(name, str):
            errors.append(FieldError("models", f"model name {name!r} is not text"))
            continue
        model = _model(name, body, _key_path("models", name), errors)
        if model is not None:
            models.append(model)
    _check_unique(models, top, errors)
    spec = RegistrySpec(
        models=tuple(sorted(models, key=lambda m: m.name)),
        port=top.integer("port", low=1, high=65535),
        metrics_port=_top_port(top, "metrics_port"),
        admin_port=_top_port(top, "admin_port"),
        vllm_command=top.text("vllm_command", blank=False),
        warmup=top.boolean("warmup"),
        policy=_policy(top),
        checkpoint=_checkpoint(top),
    )
    if errors:
        raise ConfigError(errors)
    return spec


# --- files -----------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return dict(loader.construct_mapping(node, deep=True))


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _decode(text: str, fmt: Format) -> object:
    if fmt == "json":
        try:
            return json.loads(text, object_pairs_hook=_json_object)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            reason = f"JSON syntax error at {where}: {exc.msg}"
            raise ConfigError([FieldError("(file)", reason)]) from None
        except ValueError as exc:  # a duplicate key, from _json_object
            raise ConfigError([FieldError("(file)", f"JSON error: {exc}")]) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = f"YAML syntax error{where}: {exc.problem or exc.context}"
        raise ConfigError([FieldError("(file)", reason)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([FieldError("(file)", f"YAML error: {exc}")]) from None


def guess_format(path: Path, text: str) -> Format:
    """By extension (.json, .yaml, .yml); otherwise JSON if it starts with `{`."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in {".yaml", ".yml"}:
        return "yaml"
    return "json" if text.lstrip().startswith("{") else "yaml"


def parse_config_text(text: str, fmt: Format) -> RegistrySpec:
    """Decode and validate config text in the given format."""
    return parse_config(_decode(text, fmt))


def load_config_file(path: str | os.PathLike[str]) -> RegistrySpec:
    """Read, decode and validate a config file; ConfigError (or OSError) if it cannot be."""
    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (byte {exc.start}): is this a config file?"
        raise ConfigError([FieldError("(file)", reason)]) from None
    return parse_config_text(text, guess_format(file, text))


# --- writing ---------------------------------------------------------------------------------


def _eviction_fields(policy: EvictionPolicy) -> dict[str, Any]:
    """llmux 0.5's `sleep_level` where the policy is one, else `eviction{weights, process}`."""
    if policy.sleep_level is not None:
        return {"sleep_level": policy.sleep_level}
    return {"eviction": {"weights": policy.weights.value, "process": policy.process.value}}


def _document(spec: ModelSpec | PolicySpec | CheckpointSpec) -> dict[str, Any]:
    """One section as plain data in field order, leaving out everything unset."""
    doc: dict[str, Any] = {}
    for item in fields(spec):
        value = getattr(spec, item.name)
        if item.name == "name" or value is None or (not value and not _is_scalar(value)):
            continue
        if isinstance(value, EvictionPolicy):
            doc.update(_eviction_fields(value))
        elif isinstance(value, Mapping):
            doc[item.name] = dict(sorted(value.items()))
        elif isinstance(value, tuple):
            doc[item.name] = sorted(value) if item.name == "aliases" else list(value)
        else:
            doc[item.name] = value
    return doc


def _is_scalar(value: object) -> bool:
    return isinstance(value, bool | int | float | str)


def config_document(spec: RegistrySpec) -> dict[str, Any]:
    """The spec as a plain mapping in llmux's layout, leaving out everything unset."""
    models = sorted(spec.models, key=lambda m: m.name)
    doc: dict[str, Any] = {"models": {m.name: _document(m) for m in models}}
    for key in ("port", "metrics_port", "admin_port", "vllm_command", "warmup"):
        if getattr(spec, key) is not None:
            doc[key] = getattr(spec, key)
    for key, section in (("checkpoint", spec.checkpoint), ("policy", spec.policy)):
        if body := _document(section):
            doc[key] = body
    return doc


def _json_text(value: object, depth: int = 0) -> str:
    """Indented JSON as llmux's examples write it: argv lists, and the small objects inside a
    model entry (`eviction`, `env`), stay on one line."""
    if not isinstance(value, dict) or not value or depth >= 3:
        return json.dumps(value, ensure_ascii=False)
    pad = "  " * (depth + 1)
    items = [
        f"{pad}{json.dumps(k, ensure_ascii=False)}: {_json_text(v, depth + 1)}"
        for k, v in value.items()
    ]
    return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"


class _BlockDumper(yaml.SafeDumper):
    """Block-style YAML whose lists of scalars (argv, aliases, gpu ids) stay on one line."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.SequenceNode:
    flow = all(_is_scalar(item) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_BlockDumper.add_representer(list, _represent_list)


def dump_config(spec: RegistrySpec, fmt: Format = "json") -> str:
    """The spec as llmux config text (JSON with 2-space indent, or block-style YAML)."""
    document = config_document(spec)
    if fmt == "json":
        return _json_text(document) + "\n"
    if fmt == "yaml":
        return yaml.dump(
            document, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=100
        )
    raise ValueError(f"unknown config format {fmt!r}; expected json or yaml")
