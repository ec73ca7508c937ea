"""Parsing llmux config files into specs: pure, no database."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llmux_site.core.config import (
    ConfigError,
    ModelSpec,
    RegistrySpec,
    dump_config,
    load_config_file,
    parse_config,
    parse_config_text,
)
from llmux_site.core.eviction_policy import EvictionPolicy, ProcessAction, WeightsAction

SAMPLES = Path(__file__).parent / "samples"
REPO = Path(__file__).resolve().parents[2]


def llmux05() -> dict[str, Any]:
    """A minimal llmux 0.5 document; tests break one thing in a copy of it."""
    return {
        "models": {
            "a": {"model_path": "org/a", "port": 8001, "sleep_level": 1, "extra_args": []},
            "b": {"model_path": "org/b", "port": 8002},
        },
        "port": 3000,
    }


def error_paths(data: object, *, strict: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, strict=strict)
    return [error.path for error in caught.value.errors]


def broken(path: str, value: object) -> dict[str, Any]:
    """llmux05() with the value at a dotted path replaced (or removed, for ...)."""
    data = copy.deepcopy(llmux05())
    *parents, last = path.split(".")
    holder = data
    for part in parents:
        holder = holder.setdefault(part, {})
    if value is ...:
        del holder[last]
    else:
        holder[last] = value
    return data


def test_it_reads_an_llmux_05_file() -> None:
    spec = load_config_file(SAMPLES / "llmux05.json")

    assert [m.name for m in spec.models] == ["llama-7b", "mistral-7b"]
    llama = spec.model("llama-7b")
    assert llama.model_path == "meta-llama/Llama-2-7b-chat-hf"
    assert llama.port == 8001
    assert llama.extra_args == ("--gpu-memory-utilization", "0.9")
    assert llama.eviction == EvictionPolicy(WeightsAction.OFFLOAD, ProcessAction.KEEP_RUNNING)
    assert spec.model("mistral-7b").eviction == EvictionPolicy(
        WeightsAction.RETAIN, ProcessAction.CHECKPOINT
    )
    assert (spec.port, spec.metrics_port, spec.admin_port) == (3000, 9090, 3001)
    assert spec.policy.policy_type == "cost_aware"
    assert spec.policy.eviction == EvictionPolicy.from_sleep_level(2)
    assert spec.policy.amortization_factor == 1.0
    assert spec.checkpoint.images_dir == "/var/lib/llmux/checkpoints"
    assert spec.checkpoint.keep_images is False


def test_it_reads_the_same_spec_from_json_and_yaml() -> None:
    assert load_config_file(SAMPLES / "llmux05.yaml") == load_config_file(SAMPLES / "llmux05.json")


@pytest.mark.parametrize(
    ("level", "weights", "process"),
    [
        (1, "offload", "keep_running"),
        (2, "discard", "keep_running"),
        (3, "retain", "cuda_suspend"),
        (4, "retain", "checkpoint"),
        (5, "retain", "stop"),
    ],
)
def test_it_maps_each_sleep_level_onto_an_eviction_policy(
    level: int, weights: str, process: str
) -> None:
    spec = parse_config(broken("models.a.sleep_level", level))

    assert spec.model("a").eviction == EvictionPolicy.parse(weights, process)


@pytest.mark.parametrize("level", [-1, 256, "1", True, 1.0, None])
def test_it_rejects_a_sleep_level_llmux_refuses_too(level: object) -> None:
    assert error_paths(broken("models.a.sleep_level", level)) == ["models.a.sleep_level"]


@pytest.mark.parametrize("level", [0, 6, 255])
def test_it_reads_a_sleep_level_outside_1_to_5_as_1_as_llmux_does(level: int) -> None:
    data = broken("models.a.sleep_level", level)

    spec = parse_config(data)

    assert spec.model("a").eviction == EvictionPolicy.from_sleep_level(1)
    assert [notice.path for notice in spec.notices] == ["models.a.sleep_level"]
    assert "read as 1" in spec.notices[0].reason
    assert error_paths(data, strict=True) == ["models.a.sleep_level"]


@pytest.mark.parametrize("port", [0, 65536, -5, "8001", True, 8001.0])
def test_it_rejects_a_port_out_of_range_or_of_the_wrong_type(port: object) -> None:
    assert error_paths(broken("models.a.port", port)) == ["models.a.port"]


@pytest.mark.parametrize("key", ["port", "admin_port"])
def test_it_rejects_a_top_level_port_out_of_range(key: str) -> None:
    assert error_paths(broken(key, 70000)) == [key]


def test_it_keeps_metrics_port_zero_which_llmux_reads_as_metrics_disabled() -> None:
    # Left out, the key would mean llmux's default 9090 to llmux.
    spec = parse_config(broken("metrics_port", 0))

    assert spec.metrics_port == 0
    assert '"metrics_port": 0' in dump_config(spec)


@pytest.mark.parametrize("model_path", [..., "", "   ", None, 7])
def test_it_rejects_a_missing_or_empty_model_path(model_path: object) -> None:
    assert error_paths(broken("models.a.model_path", model_path)) == ["models.a.model_path"]


@pytest.mark.parametrize(
    ("extra_args", "path"),
    [
        ("--max-model-len 4096", "models.a.extra_args"),
        ({"--max-model-len": "4096"}, "models.a.extra_args"),
        (["--max-model-len", 4096], "models.a.extra_args[1]"),
        (["--x\x00y"], "models.a.extra_args[0]"),
    ],
)
def test_it_rejects_extra_args_that_is_not_a_list_of_strings(extra_args: object, path: str) -> None:
    assert error_paths(broken("models.a.extra_args", extra_args)) == [path]


@pytest.mark.parametrize(
    "path",
    [
        "models.a.gpu_memory",
        "policy.min_quantum",
        "checkpoint.criu_options",
        "policy.eviction.level",
        "listen",
    ],
)
def test_strict_rejects_unknown_fields_naming_their_path(path: str) -> None:
    data = broken(path, 1)
    if path.startswith("policy.eviction"):
        data["policy"]["eviction"].update(weights="offload", process="stop")

    assert error_paths(data, strict=True) == [path]


def test_it_keeps_unknown_fields_as_llmux_ignores_them() -> None:
    data = llmux05()
    data["models"]["a"]["gpu_memory"] = 0.5
    data["policy"] = {"min_quantum": 100, "note": {"owner": "ml", "tags": ["a", "b"]}}
    data["checkpoint"] = {"criu_options": ["--tcp-established"]}
    data["listen"] = "0.0.0.0"

    spec = parse_config(data)

    assert dict(spec.model("a").unknown_keys) == {"gpu_memory": 0.5}
    assert dict(spec.unknown_keys) == {
        "listen": "0.0.0.0",
        "policy": {"min_quantum": 100, "note": {"owner": "ml", "tags": ["a", "b"]}},
        "checkpoint": {"criu_options": ["--tcp-established"]},
    }
    assert spec.policy.min_quantum_ms is None  # nothing read into a known field
    for fmt in ("json", "yaml"):
        assert parse_config_text(dump_config(spec, fmt), fmt) == spec


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("policy.eviction.level", 1),  # exported as a sleep_level, it would have no place
        ("models.a.note", float("inf")),
        ("models.a.\x00", 1),
    ],
)
def test_it_refuses_an_unknown_field_it_could_not_write_back(path: str, value: object) -> None:
    data = broken(path, value)
    if path.startswith("policy.eviction"):
        data["policy"]["eviction"].update(weights="offload", process="stop")

    assert len(error_paths(data)) == 1


def test_it_refuses_an_object_store_which_holds_credentials() -> None:
    data = broken("checkpoint.object_store", {"bucket": "b", "secret_key": "s"})

    assert error_paths(data) == ["checkpoint.object_store"]
    assert error_paths(data, strict=True) == ["checkpoint.object_store"]


def test_it_reports_every_error_of_a_file_at_once() -> None:
    data = llmux05()
    data["models"]["a"].update(port=0, gpu_memory=0.9, sleep_level=9)
    del data["models"]["b"]["model_path"]
    data["policy"] = {"policy_type": "lifo", "max_wait_secs": -1}

    with pytest.raises(ConfigError) as caught:
        parse_config(data, strict=True)

    paths = sorted(e.path for e in caught.value.errors)
    assert paths == [
        "models.a.gpu_memory",
        "models.a.port",
        "models.a.sleep_level",
        "models.b.model_path",
        "policy.max_wait_secs",
        "policy.policy_type",
    ]
    assert all(path in str(caught.value) for path in paths)
    assert str(caught.value).startswith("invalid llmux config (6 errors):")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("policy.request_timeout_secs", True),
        ("policy.request_timeout_secs", 1.5),
        ("policy.min_active_secs", -1),
        ("policy.amortization_factor", -0.5),
        ("policy.amortization_factor", "0.5"),
        ("policy.amortization_factor", float("nan")),
        ("policy.drain_before_switch", 1),
        ("policy.policy_type", 1),
        ("checkpoint.keep_images", "yes"),
        ("checkpoint.criu_path", ""),
        ("vllm_command", ["vllm", "serve"]),
        ("warmup", "true"),
    ],
)
def test_it_rejects_wrong_types_and_negative_numbers(path: str, value: object) -> None:
    assert error_paths(broken(path, value)) == [path]


def test_it_accepts_an_integer_where_a_number_is_expected() -> None:
    spec = parse_config(broken("policy.amortization_factor", 2))

    assert spec.policy.amortization_factor == 2.0
    assert isinstance(spec.policy.amortization_factor, float)


def test_it_runs_fifo_for_a_policy_type_it_does_not_know_as_llmux_does() -> None:
    data = broken("policy.policy_type", "round_robin")

    spec = parse_config(data)

    assert spec.policy.policy_type is None  # the registry's default, fifo
    assert [str(notice) for notice in spec.notices] == [
        "policy.policy_type: unknown policy 'round_robin': llmux runs fifo for it, and so "
        "does this llmux"
    ]
    assert error_paths(data, strict=True) == ["policy.policy_type"]


def test_eviction_wins_over_a_sleep_level_that_disagrees_as_in_later_llmux() -> None:
    data = broken("models.a.eviction", {"weights": "discard", "process": "keep_running"})

    spec = parse_config(data)

    assert spec.model("a").eviction == EvictionPolicy.from_label("discard+keep_running")
    assert [notice.path for notice in spec.notices] == ["models.a.eviction"]
    assert error_paths(data, strict=True) == ["models.a.eviction"]


def test_it_accepts_a_sleep_level_and_an_eviction_that_agree() -> None:
    data = broken("models.a.eviction", {"weights": "offload", "process": "keep_running"})

    assert parse_config(data).model("a").eviction == EvictionPolicy.from_sleep_level(1)


@pytest.mark.parametrize(
    ("eviction", "path"),
    [
        ({"weights": "retain", "process": "keep_running"}, "policy.eviction"),
        ({"weights": "evaporate", "process": "stop"}, "policy.eviction.weights"),
        ({"weights": "discard"}, "policy.eviction.process"),
        ("retain+stop", "policy.eviction"),
    ],
)
def test_it_rejects_an_eviction_policy_that_cannot_work(eviction: object, path: str) -> None:
    assert error_paths(broken("policy.eviction", eviction)) == [path]


def test_it_reads_the_fields_later_llmux_releases_added() -> None:
    spec = load_config_file(SAMPLES / "later_form.json")

    qwen = spec.model("qwen-14b")
    assert qwen.eviction == EvictionPolicy(WeightsAction.DISCARD, ProcessAction.CHECKPOINT)
    assert qwen.checkpoint_path == "/var/lib/llmux/images/qwen-14b"
    assert qwen.startup_timeout_secs == 900
    assert qwen.warmup is True
    assert spec.model("phi-4").warmup is None
    assert spec.warmup is True
    assert spec.admin_port is None
    assert spec.policy.eviction == EvictionPolicy.from_sleep_level(3)


def test_it_reads_this_projects_extensions() -> None:
    spec = load_config_file(SAMPLES / "extensions.yaml")

    chat = spec.model("chat")
    assert (chat.engine, chat.port, chat.uds) == ("simulator", None, "/run/llmux/chat.sock")
    assert chat.aliases == ("chat:latest", "gpt-4o-mini")
    assert chat.gpu_ids == (0, 1)
    assert dict(chat.env) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "HF_HUB_OFFLINE": "1"}
    assert (chat.served_model_name, chat.rewrite_model, chat.priority) == ("demo-chat", False, 10)
    assert chat.drain_timeout_secs == 5
    assert chat.probe == "chat"
    embedder = spec.model("embedder")
    assert embedder.probe == {"path": "/embed", "body": {"inputs": "ping"}}
    assert (embedder.engine, embedder.host, embedder.port, embedder.enabled) == (
        "generic",
        "::1",
        8201,
        False,
    )
    assert embedder.command[0] == "text-embeddings-router"


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"uds": "/run/llmux/a.sock"}, "models.a.uds"),  # both port and uds
        ({"port": ...}, "models.a.port"),  # neither
        ({"port": ..., "uds": "run/a.sock"}, "models.a.uds"),
        ({"port": ..., "uds": "/" + "x" * 107}, "models.a.uds"),
        ({"host": "0.0.0.0"}, "models.a.host"),
        ({"host": "10.1.2.3"}, "models.a.host"),
        ({"port": ..., "uds": "/run/a.sock", "host": "127.0.0.1"}, "models.a.host"),
        ({"engine": "tgi"}, "models.a.engine"),
        ({"engine": "generic", "sleep_level": ...}, "models.a.command"),
        ({"engine": "generic", "command": ["srv"]}, "models.a.sleep_level"),
        ({"command": "vllm serve"}, "models.a.command"),
        ({"gpu_ids": [0, -1]}, "models.a.gpu_ids[1]"),
        ({"gpu_ids": [1, 1]}, "models.a.gpu_ids[1]"),
        ({"env": {"1BAD": "x"}}, "models.a.env.1BAD"),
        ({"env": {"GOOD": 1}}, "models.a.env.GOOD"),
        ({"aliases": ["ok", "has space"]}, "models.a.aliases[1]"),
        ({"aliases": "a-alias"}, "models.a.aliases"),
        ({"startup_timeout_secs": 0}, "models.a.startup_timeout_secs"),
        ({"enabled": "no"}, "models.a.enabled"),
        ({"description": "x" * 501}, "models.a.description"),
        ({"probe": "tokens"}, "models.a.probe"),
        ({"probe": 1}, "models.a.probe"),
        ({"probe": {"path": "/health"}}, "models.a.probe"),  # vLLM takes a probe name
        (
            {"engine": "generic", "sleep_level": ..., "command": ["srv"], "probe": {}},
            "models.a.probe",
        ),
        (
            {"engine": "generic", "sleep_level": ..., "command": ["srv"], "probe": {"path": "x"}},
            "models.a.probe",
        ),
        (
            {"engine": "generic", "sleep_level": ..., "command": ["s"], "probe": {"path": "/a b"}},
            "models.a.probe",
        ),
        (
            {
                "engine": "generic",
                "sleep_level": ...,
                "command": ["srv"],
                "probe": {"path": "/v1/rerank", "body": ["not", "an", "object"]},
            },
            "models.a.probe",
        ),
    ],
)
def test_it_rejects_invalid_extension_fields(changes: dict[str, object], path: str) -> None:
    data = llmux05()
    for key, value in changes.items():
        if value is ...:
            del data["models"]["a"][key]
        else:
            data["models"]["a"][key] = value

    assert error_paths(data) == [path]


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("-leading-dash", "models.-leading-dash"),
        ("has space", 'models["has space"]'),
        ("x" * 129, "models." + "x" * 129),
        ("ünïcode", 'models["ünïcode"]'),
    ],
)
def test_it_rejects_an_invalid_model_name(name: str, path: str) -> None:
    data = llmux05()
    data["models"][name] = data["models"].pop("b")

    assert error_paths(data) == [path]


def test_it_names_models_with_dots_unambiguously_in_paths() -> None:
    data = llmux05()
    data["models"]["Qwen/Qwen2.5-7B"] = {"model_path": "q", "port": 0}

    assert error_paths(data) == ['models["Qwen/Qwen2.5-7B"].port']


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"a": {"aliases": ["b"]}}, "models.a.aliases[0]"),
        ({"a": {"aliases": ["a"]}}, "models.a.aliases[0]"),
        ({"a": {"aliases": ["shared"]}, "b": {"aliases": ["shared"]}}, "models.b.aliases[0]"),
        ({"b": {"port": 8001}}, "models.b.port"),
        ({"b": {"port": 3000}}, "models.b.port"),
    ],
)
def test_it_rejects_names_aliases_and_ports_used_twice(
    changes: dict[str, dict[str, object]], path: str
) -> None:
    data = llmux05()
    for model, fields in changes.items():
        data["models"][model].update(fields)

    assert error_paths(data) == [path]


def test_it_rejects_two_models_on_one_unix_socket() -> None:
    data = llmux05()
    for name in ("a", "b"):
        del data["models"][name]["port"]
        data["models"][name]["uds"] = "/run/llmux/same.sock"

    assert error_paths(data) == ["models.b.uds"]


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ([], "(top level)"),
        ({"port": 3000}, "models"),
        ({"models": []}, "models"),
        ({"models": {"a": "org/a"}}, "models.a"),
    ],
)
def test_it_rejects_a_document_of_the_wrong_shape(document: object, path: str) -> None:
    assert error_paths(document) == [path]


def test_it_reports_a_json_syntax_error_with_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "llmux.json"
    path.write_text('{\n  "models": {\n    "a": {"port": 8001,}\n  }\n}\n')

    with pytest.raises(ConfigError) as caught:
        load_config_file(path)

    assert "line 3, column" in str(caught.value)
    assert "JSON" in str(caught.value)


def test_it_rejects_a_file_that_is_not_utf8_text(tmp_path: Path) -> None:
    path = tmp_path / "llmux.json"
    path.write_bytes(b'{"models": {}}\xff\xfe')

    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config_file(path)


def test_it_reports_a_yaml_syntax_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "llmux.yaml"
    path.write_text("models:\n  a:\n    model_path: org/a\n   port: [8001\n")

    with pytest.raises(ConfigError) as caught:
        load_config_file(path)

    assert "YAML syntax error at line 4" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ('{"models": {"a": {"model_path": "x", "port": 1, "port": 2}}}', "json"),
        ("models:\n  a:\n    model_path: x\n    port: 1\n    port: 2\n", "yaml"),
    ],
)
def test_it_rejects_a_key_given_twice(text: str, fmt: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, fmt)

    assert "duplicate key 'port'" in str(caught.value)


@pytest.mark.parametrize("suffix", [".conf", ""])
def test_it_sniffs_the_format_of_a_file_without_a_known_extension(
    tmp_path: Path, suffix: str
) -> None:
    json_file = tmp_path / f"json{suffix}"
    json_file.write_text((SAMPLES / "llmux05.json").read_text())
    yaml_file = tmp_path / f"yaml{suffix}"
    yaml_file.write_text((SAMPLES / "llmux05.yaml").read_text())

    assert load_config_file(json_file) == load_config_file(yaml_file)


def test_it_writes_sleep_level_when_an_eviction_policy_equals_one() -> None:
    spec = RegistrySpec(
        models=(
            ModelSpec("a", "org/a", port=1, eviction=EvictionPolicy.from_sleep_level(4)),
            ModelSpec("b", "org/b", port=2, eviction=EvictionPolicy.from_label("discard+stop")),
        )
    )

    document = parse_config_text(dump_config(spec), "json")
    text = dump_config(spec)

    assert '"sleep_level": 4' in text
    assert '"eviction": {"weights": "discard", "process": "stop"}' in text
    assert document == replace(spec, eviction_form="sleep_level")


@pytest.mark.parametrize("sample", ["llmux05.json", "later_form.json", "extensions.yaml"])
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_dumped_text_parses_back_to_the_same_spec(sample: str, fmt: Any) -> None:
    spec = load_config_file(SAMPLES / sample)

    text = dump_config(spec, fmt)

    assert parse_config_text(text, fmt) == spec
    assert dump_config(parse_config_text(text, fmt), fmt) == text


def test_a_file_of_later_llmux_is_written_back_with_eviction_objects() -> None:
    # llmux 0.6 and later ignore sleep_level: written as one, offload+keep_running would
    # come back to them as the default retain+stop.
    level_1 = {"weights": "offload", "process": "keep_running"}
    data = llmux05()
    del data["models"]["a"]["sleep_level"]
    data["models"]["a"]["eviction"] = level_1
    data["policy"] = {"eviction": level_1}

    spec = parse_config(data)
    document = json.loads(dump_config(spec))

    assert spec.eviction_form == "eviction"
    assert document["models"]["a"]["eviction"] == level_1
    assert document["policy"] == {"eviction": level_1}
    assert "sleep_level" not in json.dumps(document)
    assert parse_config(document) == spec


def test_it_writes_an_llmux_05_file_back_in_llmux_05_shape() -> None:
    spec = load_config_file(SAMPLES / "llmux05.json")

    document = parse_config_text(dump_config(spec), "json")
    text = dump_config(spec)

    assert document == spec
    assert text.startswith('{\n  "models": {\n    "llama-7b": {\n')
    assert '"extra_args": ["--gpu-memory-utilization", "0.9"]' in text
    for later_key in ("eviction", "engine", "aliases", "uds", "warmup"):
        assert f'"{later_key}"' not in text


def test_the_config_module_imports_no_django() -> None:
    code = (
        "import sys, llmux_site.core.config\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'models_app'))\n"
        "print(loaded)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"
