"""Paths in model definitions are normalised and confined; engines listen on loopback.

Confined: what the REST API and the dashboard write (`save_model`), and `apply_registry` by
default. Not confined: a file an administrator imports from the command line
(`llmux_import`, `llmux serve --config`), whose paths need only be absolute.
"""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from llmux_site.core.config import ConfigError, parse_config
from models_app.models import ModelDefinition, RegistryConfig
from models_app.services.registry import apply_registry, save_model

pytestmark = pytest.mark.django_db

ROOTS = ["/srv/llmux", "/models"]


def document(**model: Any) -> dict[str, Any]:
    return {"models": {"m": {"model_path": "org/model", "port": 18500} | model}}


def refused(doc: dict[str, Any]) -> str:
    with override_settings(LLMUX_PATH_ROOTS=ROOTS), pytest.raises(ConfigError) as caught:
        apply_registry(parse_config(doc))
    assert not ModelDefinition.objects.exists()  # nothing written
    return str(caught.value)


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ({"checkpoint_path": "/srv/llmux/images/../../../etc"}, "checkpoint_path"),
        ({"checkpoint_path": "/etc/shadow"}, "checkpoint_path"),
        ({"model_path": "/models/../root/.ssh"}, "model_path"),
        ({"model_path": "/home/other/model"}, "model_path"),
        ({"model_path": "../../etc", "port": 18500}, "model_path"),
        ({"uds": "/etc/llmux.sock", "port": None}, "uds"),
    ],
)
def test_a_path_outside_the_roots_or_with_dotdot_is_refused(
    model: dict[str, Any], field: str
) -> None:
    doc = document(**model)
    if doc["models"]["m"].get("port") is None:
        doc["models"]["m"].pop("port")
    message = refused(doc)
    assert f"models.m.{field}" in message
    assert "'..'" in message or "outside the allowed roots" in message


def test_paths_under_a_root_and_model_ids_are_fine() -> None:
    doc = document(model_path="/models/qwen", checkpoint_path="/srv/llmux/images/q")
    with override_settings(LLMUX_PATH_ROOTS=ROOTS):
        apply_registry(parse_config(doc))
        apply_registry(parse_config(document(model_path="Qwen/Qwen2.5-7B-Instruct")))
    assert ModelDefinition.objects.get().model_path == "Qwen/Qwen2.5-7B-Instruct"


def test_the_images_directory_is_confined_too() -> None:
    message = refused({"checkpoint": {"images_dir": "/var/../etc"}, "models": {}})
    assert "checkpoint.images_dir" in message


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "example.com", "::"])
def test_an_engine_on_anything_but_loopback_is_refused(host: str) -> None:
    message = refused(document(host=host))
    assert "models.m.host" in message and "not loopback" in message


@pytest.mark.parametrize(
    "arg", ["--x; rm -rf /", "a && b", "$(id)", "`id`", "x | nc host 1", "> /etc/passwd", "a\nb"]
)
def test_shell_metacharacters_in_extra_args_are_refused(arg: str) -> None:
    message = refused(document(extra_args=["--ok", arg]))
    assert "models.m.extra_args[1]" in message and "never through a shell" in message


@pytest.mark.parametrize("args", ["--a --b", [1, 2], ["ok", None]])
def test_extra_args_are_a_list_of_strings(args: Any) -> None:
    assert "models.m.extra_args" in refused(document(extra_args=args))


def test_json_valued_arguments_stay_allowed() -> None:
    args = ["--override-generation-config", '{"temperature": 0.5, "top_p": 0.9}']
    with override_settings(LLMUX_PATH_ROOTS=ROOTS):
        apply_registry(parse_config(document(extra_args=args)))
    assert ModelDefinition.objects.get().extra_args == args


@pytest.mark.parametrize("name", ["BAD-NAME", "1ABC", "A B", "X=Y"])
def test_environment_names_are_validated(name: str) -> None:
    assert "models.m.env" in refused(document(env={name: "v"}))


# --- a file imported from the command line is an administrator's ---------------------------

OUTSIDE = {
    "model_path": "/srv/other/model",
    "checkpoint_path": "/tmp/llmux-checkpoints/m",
    "port": 18500,
}


def import_command(tmp_path: Path, document: dict[str, Any]) -> None:
    path = tmp_path / "llmux.json"
    path.write_text(json.dumps(document))
    with override_settings(LLMUX_PATH_ROOTS=ROOTS):
        call_command("llmux_import", str(path), stdout=StringIO())


def test_a_command_line_import_may_use_paths_outside_the_roots(tmp_path: Path) -> None:
    import_command(
        tmp_path, {"models": {"m": OUTSIDE}, "checkpoint": {"images_dir": "/tmp/llmux-checkpoints"}}
    )

    model = ModelDefinition.objects.get()
    assert (model.model_path, model.checkpoint_path) == (
        "/srv/other/model",
        "/tmp/llmux-checkpoints/m",
    )
    assert RegistryConfig.load().images_dir == "/tmp/llmux-checkpoints"


@pytest.mark.parametrize(
    "document",
    [
        {"models": {}, "checkpoint": {"images_dir": "llmux-checkpoints"}},
        {"models": {"m": {**OUTSIDE, "checkpoint_path": "images/m"}}},
    ],
)
def test_a_command_line_import_still_needs_absolute_paths(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    with pytest.raises(CommandError, match="must be an absolute path"):
        import_command(tmp_path, document)
    assert not ModelDefinition.objects.exists()


@pytest.mark.parametrize("restricted", [False, True])
def test_an_api_or_dashboard_write_stays_confined(restricted: bool) -> None:
    entry = {"engine": "simulator", **OUTSIDE, "model_path": "sim/m"}
    with override_settings(LLMUX_PATH_ROOTS=ROOTS), pytest.raises(ConfigError) as caught:
        save_model("m", entry, restricted=restricted)

    assert [error.path for error in caught.value.errors] == ["models.m.checkpoint_path"]
    assert "outside the allowed roots" in str(caught.value)


def test_an_edit_keeps_a_path_the_administrator_imported_but_sets_no_new_one(
    tmp_path: Path,
) -> None:
    entry = {"engine": "simulator", **OUTSIDE, "model_path": "sim/m"}
    import_command(tmp_path, {"models": {"m": entry}})

    with override_settings(LLMUX_PATH_ROOTS=ROOTS):
        tuned = save_model("m", {**entry, "description": "tuned"}, restricted=True)
        with pytest.raises(ConfigError) as caught:
            save_model("m", {**entry, "checkpoint_path": "/tmp/elsewhere"}, restricted=True)

    assert [change.key for change in tuned.changes] == ["description"]
    assert [error.path for error in caught.value.errors] == ["models.m.checkpoint_path"]
    assert ModelDefinition.objects.get().checkpoint_path == "/tmp/llmux-checkpoints/m"
