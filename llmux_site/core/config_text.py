"""llmux config text: JSON or YAML decoded into a document, and a document written back.

Decoding refuses a key given twice (JSON and PyYAML would keep the last silently) and
reports a syntax error with its line; writing lays a document out as llmux's examples do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .config_specs import ConfigError, FieldError, Format


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


def decode_config_text(text: str, fmt: Format) -> object:
    """The document in `text`; ConfigError (with its line) when it is not valid JSON or YAML."""
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


def is_scalar(value: object) -> bool:
    return isinstance(value, bool | int | float | str)


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
    flow = all(is_scalar(item) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_BlockDumper.add_representer(list, _represent_list)


def encode_config_text(document: dict[str, Any], fmt: Format) -> str:
    """`document` as config text (JSON with 2-space indent, or block-style YAML)."""
    if fmt == "json":
        return _json_text(document) + "\n"
    if fmt == "yaml":
        return yaml.dump(
            document, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=100
        )
    raise ValueError(f"unknown config format {fmt!r}; expected json or yaml")
