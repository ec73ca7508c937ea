"""Importing config files into the registry tables and exporting them back."""

from __future__ import annotations

import copy
import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.forms.models import model_to_dict
from django.test import override_settings

from llmux_site.core import config
from llmux_site.core.config import ConfigError, dump_config, load_config_file, parse_config
from models_app.models import (
    EngineKind,
    EngineRuntime,
    EngineState,
    ModelAlias,
    ModelDefinition,
    PolicyType,
    RegistryConfig,
)
from models_app.models.definitions import MODEL_NAME_RE
from models_app.services.registry import apply_registry, export_registry

SAMPLES = Path(__file__).parent / "samples"
LLMUX05 = SAMPLES / "llmux05.json"


def registry_state() -> dict[str, Any]:
    """Every registry row, primary keys and timestamps included."""
    models = [
        {**model_to_dict(m), "pk": m.pk, "updated_at": m.updated_at}
        for m in ModelDefinition.objects.order_by("name")
    ]
    settings = RegistryConfig.objects.filter(pk=1).first()
    return {
        "models": models,
        "aliases": sorted(ModelAlias.objects.values_list("pk", "name", "model_id")),
        "settings": settings.as_dict() if settings else None,
    }


def write(tmp_path: Path, document: dict[str, Any], name: str = "llmux.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def llmux05() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(LLMUX05.read_text())
    return data


def import_file(path: Path, *args: str) -> str:
    out = StringIO()
    call_command("llmux_import", str(path), *args, stdout=out)
    return out.getvalue()


def export_text(*args: str) -> str:
    out = StringIO()
    call_command("llmux_export", *args, stdout=out)
    return out.getvalue()


# --- the shared vocabulary stays in step with models_app -------------------------------------


def test_the_config_model_name_pattern_is_models_apps() -> None:
    assert config.MODEL_NAME_PATTERN == MODEL_NAME_RE


def test_the_config_engines_and_policy_types_are_models_apps_choices() -> None:
    assert list(config.ENGINES) == list(EngineKind.values)
    assert list(config.POLICY_TYPES) == list(PolicyType.values)


# --- importing an llmux 0.5 file ---------------------------------------------------------------


@pytest.mark.django_db
def test_it_imports_an_llmux_05_file_into_the_registry_tables() -> None:
    report = apply_registry(load_config_file(LLMUX05))

    assert report.names("created") == ["llama-7b", "mistral-7b"]
    llama = ModelDefinition.objects.get(name="llama-7b")
    assert llama.model_path == "meta-llama/Llama-2-7b-chat-hf"
    assert (llama.host, llama.port, llama.uds_path) == ("127.0.0.1", 8001, "")
    assert llama.extra_args == ["--gpu-memory-utilization", "0.9"]
    assert (llama.eviction_weights, llama.eviction_process) == ("offload", "keep_running")
    assert llama.engine_kind == EngineKind.VLLM
    mistral = ModelDefinition.objects.get(name="mistral-7b")
    assert (mistral.eviction_weights, mistral.eviction_process) == ("retain", "checkpoint")
    settings = RegistryConfig.load()
    assert (settings.port, settings.metrics_port, settings.admin_port) == (3000, 9090, 3001)
    assert settings.vllm_command == "vllm"
    assert settings.policy_type == PolicyType.COST_AWARE
    assert settings.request_timeout_secs == 120
    assert (settings.default_weights, settings.default_process) == ("discard", "keep_running")
    assert (settings.min_active_secs, settings.coalesce_window_ms) == (5, 2000)
    assert (settings.amortization_factor, settings.max_wait_secs) == (1.0, 15)
    assert settings.tick_interval_ms == 500
    assert settings.criu_path == "criu"
    assert settings.cuda_plugin_dir == "/usr/lib/criu/"
    assert settings.images_dir == "/var/lib/llmux/checkpoints"
    assert settings.cuda_checkpoint_path == "cuda-checkpoint"
    assert settings.keep_images is False


@pytest.mark.django_db
def test_import_then_export_is_a_fixed_point() -> None:
    apply_registry(load_config_file(LLMUX05))
    state = registry_state()
    first = export_text()

    report = apply_registry(parse_config(json.loads(first)))

    assert report.names("unchanged") == ["llama-7b", "mistral-7b"]
    assert report.settings_changes == ()
    assert not report.changed
    assert registry_state() == state
    assert export_text() == first


@pytest.mark.django_db
def test_an_exported_llmux_05_file_still_looks_like_llmux_05() -> None:
    apply_registry(load_config_file(LLMUX05))

    exported = json.loads(export_text())

    assert exported["models"]["llama-7b"] == {
        "model_path": "meta-llama/Llama-2-7b-chat-hf",
        "port": 8001,
        "sleep_level": 1,
        "extra_args": ["--gpu-memory-utilization", "0.9"],
    }
    assert exported["models"]["mistral-7b"]["sleep_level"] == 4
    assert exported["policy"]["sleep_level"] == 2
    assert exported["checkpoint"]["keep_images"] is False


@pytest.mark.django_db
def test_the_same_content_as_yaml_imports_to_the_same_state() -> None:
    apply_registry(load_config_file(LLMUX05))
    from_json = export_text()
    ModelDefinition.objects.all().delete()
    RegistryConfig.objects.all().delete()

    apply_registry(load_config_file(SAMPLES / "llmux05.yaml"))

    assert export_text() == from_json


# --- invalid files write nothing -------------------------------------------------------------

INVALID = [
    ("models.llama-7b.sleep_level", 256),
    ("models.llama-7b.port", 70000),
    ("models.llama-7b.model_path", ...),
    ("models.llama-7b.extra_args", "--gpu-memory-utilization 0.5"),
    ("models.llama-7b.warmup", "yes"),
]


def invalid_variant(path: str, value: object) -> dict[str, Any]:
    """The llmux 0.5 sample, changed in a harmless way plus one invalid value at `path`."""
    data = llmux05()
    data["models"]["mistral-7b"]["port"] = 8102  # would be an update if anything were written
    data["models"]["new-model"] = {"model_path": "org/new", "port": 8003}
    holder = data["models"]["llama-7b"]
    key = path.rsplit(".", 1)[1]
    if value is ...:
        del holder[key]
    else:
        holder[key] = value
    return data


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "value"), INVALID)
@pytest.mark.parametrize("previous_import", [False, True])
def test_the_service_rejects_an_invalid_file_writing_nothing(
    path: str, value: object, previous_import: bool
) -> None:
    if previous_import:
        apply_registry(load_config_file(LLMUX05))
    before = registry_state()

    with pytest.raises(ConfigError) as caught:
        apply_registry(parse_config(invalid_variant(path, value)))

    assert [e.path for e in caught.value.errors] == [path]
    assert registry_state() == before


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "value"), INVALID)
@pytest.mark.parametrize("flags", [(), ("--dry-run",), ("--prune",)])
def test_the_import_command_rejects_an_invalid_file_writing_nothing(
    tmp_path: Path, path: str, value: object, flags: tuple[str, ...]
) -> None:
    apply_registry(load_config_file(LLMUX05))
    before = registry_state()

    with pytest.raises(CommandError) as caught:
        import_file(write(tmp_path, invalid_variant(path, value)), *flags)

    assert path in str(caught.value)
    assert "nothing was written" in str(caught.value)
    assert caught.value.returncode == 1
    assert registry_state() == before


@pytest.mark.django_db
def test_the_strict_import_command_lists_every_error_of_a_file(tmp_path: Path) -> None:
    data = llmux05()
    data["models"]["llama-7b"]["sleep_level"] = 0
    data["models"]["mistral-7b"]["gpu_memory"] = 0.8
    data["policy"]["policy_type"] = "lru"

    with pytest.raises(CommandError) as caught:
        import_file(write(tmp_path, data), "--strict")

    message = str(caught.value)
    for path in (
        "models.llama-7b.sleep_level",
        "models.mistral-7b.gpu_memory",
        "policy.policy_type",
    ):
        assert path in message
    assert not ModelDefinition.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("bad.json", '{\n  "models": {\n    "a": {"model_path": "x" "port": 1}\n  }\n}\n', 3),
        ("bad.yaml", "models:\n  a:\n    model_path: x\n  port: 1\n   sleep_level: 1\n", 5),
    ],
)
def test_the_import_command_reports_a_syntax_error_with_its_line(
    tmp_path: Path, name: str, text: str, line: int
) -> None:
    path = tmp_path / name
    path.write_text(text)

    with pytest.raises(CommandError) as caught:
        import_file(path)

    assert f"line {line}" in str(caught.value)
    assert "nothing was written" in str(caught.value)


@pytest.mark.django_db
def test_the_import_command_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot read"):
        import_file(tmp_path / "absent.json")


@pytest.mark.django_db
@pytest.mark.parametrize("previous_import", [False, True])
def test_a_dry_run_reports_the_changes_and_writes_nothing(
    tmp_path: Path, previous_import: bool
) -> None:
    if previous_import:
        apply_registry(load_config_file(LLMUX05))
    before = registry_state()
    data = llmux05()
    data["models"]["llama-7b"]["port"] = 8011
    data["models"]["new-model"] = {"model_path": "org/new", "port": 8003, "aliases": ["n"]}
    data["policy"]["request_timeout_secs"] = 60

    output = import_file(write(tmp_path, data), "--dry-run")

    assert registry_state() == before
    assert "dry run: nothing was written" in output
    assert "created   new-model" in output
    assert "policy.request_timeout_secs" in output
    if previous_import:
        assert "port: 8001 -> 8011" in output
    assert "dry run" not in import_file(write(tmp_path, data))
    assert registry_state() != before


# --- re-importing a changed file ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_reimport_updates_models_in_place_and_names_the_changed_fields() -> None:
    apply_registry(load_config_file(LLMUX05))
    pks = dict(ModelDefinition.objects.values_list("name", "pk"))
    EngineRuntime.objects.create(model_id=pks["llama-7b"])
    data = llmux05()
    data["models"]["llama-7b"].update(port=8011, sleep_level=2, aliases=["llama"])
    data["policy"]["tick_interval_ms"] = 100

    report = apply_registry(parse_config(data))

    assert dict(ModelDefinition.objects.values_list("name", "pk")) == pks
    assert EngineRuntime.objects.filter(model_id=pks["llama-7b"]).exists()
    llama = report.outcome("llama-7b")
    assert llama.action == "updated"
    assert {c.key: (c.old, c.new) for c in llama.changes} == {
        "port": (8001, 8011),
        "eviction": ("offload+keep_running", "discard+keep_running"),
        "aliases": ([], ["llama"]),
    }
    assert report.outcome("mistral-7b").action == "unchanged"
    assert [(c.key, c.old, c.new) for c in report.settings_changes] == [
        ("policy.tick_interval_ms", 500, 100)
    ]
    assert ModelDefinition.objects.get(pk=pks["llama-7b"]).port == 8011
    assert list(ModelAlias.objects.values_list("name", "model_id")) == [("llama", pks["llama-7b"])]


@pytest.mark.django_db
def test_a_key_left_out_of_a_reimport_returns_to_its_default() -> None:
    data = llmux05()
    data["models"]["llama-7b"]["startup_timeout_secs"] = 60
    apply_registry(parse_config(data))
    del data["models"]["llama-7b"]["startup_timeout_secs"]

    report = apply_registry(parse_config(data))

    assert [str(c) for c in report.outcome("llama-7b").changes] == [
        "startup_timeout_secs: 60 -> (unset)"
    ]
    # Unset: the model follows the registry's startup_timeout_secs (llmux's, 1800).
    assert ModelDefinition.objects.get(name="llama-7b").startup_timeout_secs is None


@pytest.mark.django_db
def test_models_absent_from_the_file_are_kept_and_reported(tmp_path: Path) -> None:
    apply_registry(load_config_file(LLMUX05))
    data = llmux05()
    del data["models"]["mistral-7b"]

    output = import_file(write(tmp_path, data))

    assert "kept      mistral-7b (in the database, not in the file)" in output
    assert "--prune" in output
    assert ModelDefinition.objects.filter(name="mistral-7b").exists()


@pytest.mark.django_db
def test_prune_removes_models_absent_from_the_file(tmp_path: Path) -> None:
    apply_registry(load_config_file(LLMUX05))
    data = llmux05()
    del data["models"]["mistral-7b"]

    output = import_file(write(tmp_path, data), "--prune")

    assert "removed   mistral-7b" in output
    assert list(ModelDefinition.objects.values_list("name", flat=True)) == ["llama-7b"]


@pytest.mark.django_db
def test_prune_refuses_to_remove_a_model_whose_engine_is_running() -> None:
    apply_registry(load_config_file(LLMUX05))
    mistral = ModelDefinition.objects.get(name="mistral-7b")
    EngineRuntime.objects.create(
        model=mistral, state=EngineState.RUNNING, pid=4242, create_time=1.0
    )
    before = registry_state()
    data = llmux05()
    del data["models"]["mistral-7b"]
    data["models"]["llama-7b"]["port"] = 8011

    with pytest.raises(ConfigError) as caught:
        apply_registry(parse_config(data), prune=True)

    assert [e.path for e in caught.value.errors] == ["models.mistral-7b"]
    assert "running" in caught.value.errors[0].reason
    assert registry_state() == before


@pytest.mark.django_db
def test_an_alias_can_move_between_models_in_one_import() -> None:
    data = llmux05()
    data["models"]["llama-7b"]["aliases"] = ["default"]
    apply_registry(parse_config(data))
    data["models"]["llama-7b"]["aliases"] = []
    data["models"]["mistral-7b"]["aliases"] = ["default"]

    apply_registry(parse_config(data))

    assert ModelAlias.objects.get(name="default").model.name == "mistral-7b"


# --- clashes with models that stay in the database --------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("new_model", "path"),
    [
        ({"model_path": "x", "port": 8002}, "models.other.port"),
        ({"model_path": "x", "port": 8009, "aliases": ["mistral-7b"]}, "models.other.aliases[0]"),
        ({"model_path": "x", "port": 8009, "aliases": ["mistral"]}, "models.other.aliases[0]"),
    ],
)
def test_it_rejects_a_clash_with_a_model_kept_in_the_database(
    new_model: dict[str, Any], path: str
) -> None:
    data = llmux05()
    data["models"]["mistral-7b"]["aliases"] = ["mistral"]
    apply_registry(parse_config(data))
    before = registry_state()
    only_new = copy.deepcopy(data)
    del only_new["models"]["mistral-7b"]
    only_new["models"]["other"] = new_model

    with pytest.raises(ConfigError) as caught:
        apply_registry(parse_config(only_new))

    assert [e.path for e in caught.value.errors] == [path]
    assert registry_state() == before
    apply_registry(parse_config(only_new), prune=True)  # no clash once the old model goes
    assert ModelDefinition.objects.filter(name="other").exists()


@pytest.mark.django_db
def test_it_rejects_a_model_named_like_an_alias_kept_in_the_database() -> None:
    data = llmux05()
    data["models"]["mistral-7b"]["aliases"] = ["mistral"]
    apply_registry(parse_config(data))

    with pytest.raises(ConfigError) as caught:
        apply_registry(parse_config({"models": {"mistral": {"model_path": "x", "port": 19009}}}))

    assert [e.path for e in caught.value.errors] == ["models.mistral"]


# --- later llmux fields and our extensions --------------------------------------------------


@pytest.mark.django_db
def test_it_imports_the_fields_later_llmux_releases_added() -> None:
    apply_registry(load_config_file(SAMPLES / "later_form.json"))

    qwen = ModelDefinition.objects.get(name="qwen-14b")
    assert (qwen.eviction_weights, qwen.eviction_process) == ("discard", "checkpoint")
    assert qwen.checkpoint_path == "/var/lib/llmux/images/qwen-14b"
    assert qwen.startup_timeout_secs == 900
    assert qwen.warmup is True
    assert ModelDefinition.objects.get(name="phi-4").warmup is None
    settings = RegistryConfig.load()
    assert settings.warmup is True
    assert (settings.default_weights, settings.default_process) == ("retain", "cuda_suspend")
    assert settings.policy_type == PolicyType.TIME_SLICE


@pytest.mark.django_db
def test_it_imports_this_projects_extensions() -> None:
    apply_registry(load_config_file(SAMPLES / "extensions.yaml"))

    chat = ModelDefinition.objects.get(name="chat")
    assert chat.engine_kind == EngineKind.SIMULATOR
    assert (chat.port, chat.uds_path) == (None, "/run/llmux/chat.sock")
    assert sorted(chat.aliases.values_list("name", flat=True)) == ["chat:latest", "gpt-4o-mini"]
    assert chat.gpu_ids == [0, 1]
    assert chat.env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "HF_HUB_OFFLINE": "1"}
    assert (chat.served_model_name, chat.rewrite_model) == ("demo-chat", False)
    assert (chat.priority, chat.drain_timeout_secs, chat.enabled) == (10, 5, True)
    embedder = ModelDefinition.objects.get(name="embedder")
    assert embedder.engine_kind == EngineKind.GENERIC
    assert (embedder.host, embedder.port, embedder.enabled) == ("::1", 8201, False)
    assert embedder.command[:2] == ["text-embeddings-router", "--model-id"]
    assert (embedder.eviction_weights, embedder.eviction_process) == ("retain", "stop")
    assert RegistryConfig.load().vllm_command == "llmux-sim"


@pytest.mark.django_db
@pytest.mark.parametrize("sample", ["later_form.json", "extensions.yaml"])
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_later_and_extended_files_round_trip_as_a_fixed_point(sample: str, fmt: str) -> None:
    apply_registry(load_config_file(SAMPLES / sample))
    state = registry_state()
    first = export_text("--format", fmt)

    report = apply_registry(config.parse_config_text(first, "yaml" if fmt == "yaml" else "json"))

    assert not report.changed
    assert registry_state() == state
    assert export_text("--format", fmt) == first


@pytest.mark.django_db
def test_every_llmux_setting_has_a_column() -> None:
    data = llmux05()
    data["policy"]["min_quantum_ms"] = 3000

    report = apply_registry(parse_config(data))

    assert RegistryConfig.load().min_quantum_ms == 3000
    assert not any("not stored" in warning for warning in report.warnings)


@pytest.mark.django_db
def test_changes_to_a_running_model_are_reported_as_applying_at_its_next_start() -> None:
    apply_registry(load_config_file(LLMUX05))
    llama = ModelDefinition.objects.get(name="llama-7b")
    EngineRuntime.objects.create(model=llama, state=EngineState.RUNNING, pid=7, create_time=1.0)
    data = llmux05()
    data["models"]["llama-7b"]["extra_args"] = ["--max-model-len", "4096"]

    with override_settings(LLMUX_SLEEP_MODE="on"):  # as on a GPU host: its level 1 can sleep
        report = apply_registry(parse_config(data))

    assert report.warnings[1:] == (
        "llama-7b: engine is running; changes apply when it next starts",
    )
    assert report.warnings[0].startswith("not used by this llmux")


# --- the export command --------------------------------------------------------------------


@pytest.mark.django_db
def test_the_export_command_writes_json_to_stdout_by_default() -> None:
    apply_registry(load_config_file(LLMUX05))

    assert export_text() == dump_config(export_registry(), "json")
    assert json.loads(export_text())["models"]["llama-7b"]["port"] == 8001


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "args"), [("out.yaml", ()), ("out.txt", ("--format", "yaml"))])
def test_the_export_command_writes_yaml_to_a_file(
    tmp_path: Path, name: str, args: tuple[str, ...]
) -> None:
    apply_registry(load_config_file(LLMUX05))
    output = tmp_path / name

    assert export_text("--output", str(output), *args) == ""

    assert output.read_text() == dump_config(export_registry(), "yaml")
    assert output.read_text().startswith("models:\n  llama-7b:\n")


@pytest.mark.django_db
def test_an_empty_registry_exports_as_an_empty_models_object() -> None:
    assert json.loads(export_text()) == {"models": {}}
