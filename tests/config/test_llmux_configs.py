"""llmux's own config files import unchanged, through the real commands, on a fresh data
directory each, and export back to a file that llmux reads the same way (issue 15, item 1).

The configs below are written from llmux's documented format: the same keys, forms and
values as the example and test configs published with llmux 0.5.0 (`config.example.json`,
`config.test-checkpoint.json`, `config.test-cudasuspend.json`, `config.test-sleep.json`,
`config.test-tp2.json`) and 0.9.0 (the same four, moved to `configs/`), with our own model
names and tool paths. Their checkpoint images go to llmux's default `/tmp/llmux-checkpoints`,
which LLMUX_PATH_ROOTS does not allow here: a file imported from the command line is an
administrator's, and its paths are not confined (docs/CONFIG.md, "Who may set what").
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_settings import run_manage

IMAGES = "/tmp/llmux-checkpoints"  # llmux's default checkpoint.images_dir
PLUGINS = "/usr/lib/criu/"  # llmux's default checkpoint.cuda_plugin_dir
TEST_ARGS = ["--max-model-len", "4096", "--gpu-memory-utilization", "0.85", "--enforce-eager"]
TP2_ARGS = [
    *["--max-model-len", "512", "--gpu-memory-utilization", "0.85", "--enforce-eager"],
    *["--disable-custom-all-reduce", "--tensor-parallel-size", "2"],
]
BUILT_CRIU = {
    "criu_path": "/opt/criu-build/criu/criu",
    "cuda_plugin_dir": "/opt/criu-build/plugins/cuda/",
    "images_dir": IMAGES,
    "cuda_checkpoint_path": "cuda-checkpoint",
}


def example(eviction: dict[str, Any] | None) -> dict[str, Any]:
    """`config.example.json`: two models, every checkpoint key at llmux's defaults, the
    policy's first three keys, the three ports. 0.5 uses sleep_level 1 and 4 (policy 1),
    0.9 `eviction` objects and a top-level `warmup`."""
    models = {
        "chat-7b": {"model_path": "example-org/chat-7b", "port": 8101},
        "code-7b": {"model_path": "example-org/code-7b", "port": 8102},
    }
    policy: dict[str, Any] = {
        "policy_type": "fifo",
        "request_timeout_secs": 300,
        "drain_before_switch": True,
    }
    if eviction is None:
        models["chat-7b"]["sleep_level"] = 1
        models["code-7b"]["sleep_level"] = 4
        policy["sleep_level"] = 1
    else:
        models["chat-7b"]["eviction"] = eviction
        models["code-7b"]["eviction"] = {"weights": "discard", "process": "checkpoint"}
        policy["eviction"] = eviction
    for model in models.values():
        model["extra_args"] = ["--gpu-memory-utilization", "0.9"]
    document: dict[str, Any] = {
        "models": models,
        "checkpoint": {
            "criu_path": "criu",
            "cuda_plugin_dir": PLUGINS,
            "images_dir": IMAGES,
            "cuda_checkpoint_path": "cuda-checkpoint",
            "keep_images": True,
        },
        "policy": policy,
        "port": 3000,
        "metrics_port": 9090,
        "admin_port": 3001,
    }
    return document if eviction is None else {**document, "warmup": False}


def one_engine_test(
    evicts: dict[str, Any], *, checkpoint: dict[str, Any] | None, args: list[str] = TEST_ARGS
) -> dict[str, Any]:
    """The `config.test-*.json` shape: one model on a hand-built vLLM, metrics off."""
    document: dict[str, Any] = {
        "models": {
            "llama-8b-test": {
                "model_path": "test-org/llama-8b-instruct",
                "port": 8105,
                **evicts,
                "extra_args": list(args),
            }
        },
        "vllm_command": "/home/ops/.local/bin/vllm",
        "port": 3000,
        "metrics_port": 0,
    }
    if checkpoint is not None:
        document["checkpoint"] = dict(checkpoint)
    return document


def evict(weights: str, process: str) -> dict[str, Any]:
    return {"eviction": {"weights": weights, "process": process}}


LLMUX_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "0.5.0 config.example.json": ("0.5", example(None)),
    "0.5.0 config.test-checkpoint.json": (
        "0.5",
        one_engine_test({"sleep_level": 4}, checkpoint=BUILT_CRIU),
    ),
    "0.5.0 config.test-cudasuspend.json": (
        "0.5",
        one_engine_test({"sleep_level": 3}, checkpoint=BUILT_CRIU),
    ),
    "0.5.0 config.test-sleep.json": ("0.5", one_engine_test({"sleep_level": 1}, checkpoint=None)),
    "0.5.0 config.test-tp2.json": (
        "0.5",
        {
            **one_engine_test(
                {"sleep_level": 3},
                checkpoint={"cuda_checkpoint_path": "cuda-checkpoint"},
                args=TP2_ARGS,
            ),
            "port": 3333,
        },
    ),
    "0.9.0 configs/config.example.json": (
        "0.9",
        example({"weights": "offload", "process": "keep_running"}),
    ),
    "0.9.0 configs/config.test-checkpoint.json": (
        "0.9",
        one_engine_test(evict("discard", "checkpoint"), checkpoint=BUILT_CRIU),
    ),
    "0.9.0 configs/config.test-cudasuspend.json": (
        "0.9",
        one_engine_test(evict("retain", "cuda_suspend"), checkpoint=BUILT_CRIU),
    ),
    "0.9.0 configs/config.test-sleep.json": (
        "0.9",
        one_engine_test(evict("offload", "keep_running"), checkpoint=None),
    ),
}

# --- what llmux reads from a file: its own defaults filled in, unknown keys ignored -------

LEVELS = {
    1: ("offload", "keep_running"),
    2: ("discard", "keep_running"),
    3: ("retain", "cuda_suspend"),
    4: ("retain", "checkpoint"),
    5: ("retain", "stop"),
}
TOP_DEFAULTS: dict[str, Any] = {
    "port": 3000,
    "metrics_port": 9090,
    "admin_port": None,
    "vllm_command": "vllm",
    "startup_timeout_secs": 1800,
    "warmup": False,
}
CHECKPOINT_DEFAULTS: dict[str, Any] = {
    "criu_path": "criu",
    "cuda_plugin_dir": PLUGINS,
    "images_dir": IMAGES,
    "cuda_checkpoint_path": "cuda-checkpoint",
    "keep_images": True,
}
POLICY_DEFAULTS: dict[str, Any] = {
    "policy_type": "fifo",
    "request_timeout_secs": 300,
    "drain_before_switch": True,
    "min_active_secs": 5,
    "coalesce_window_ms": 2000,
    "amortization_factor": 0.5,
    "max_wait_secs": 15,
    "tick_interval_ms": 500,
    "min_quantum_ms": 2000,
}


def eviction_read(section: dict[str, Any], version: str) -> tuple[str, str]:
    """0.5 reads `sleep_level` (default 5; outside 2-5 means 1) and ignores `eviction`;
    0.6 and later read `eviction` (default retain+stop) and ignore `sleep_level`."""
    if version == "0.5":
        level = section.get("sleep_level", 5)
        return LEVELS[level if 2 <= level <= 5 else 1]
    value = section.get("eviction", {"weights": "retain", "process": "stop"})
    return (value["weights"], value["process"])


def as_llmux_reads_it(document: dict[str, Any], version: str) -> dict[str, Any]:
    policy = document.get("policy", {})
    checkpoint = document.get("checkpoint")
    models = {
        name: {
            "model_path": model["model_path"],
            "port": model["port"],
            "extra_args": model.get("extra_args", []),
            "eviction": eviction_read(model, version),
        }
        for name, model in document["models"].items()
    }
    return {
        "models": models,
        **{key: document.get(key, default) for key, default in TOP_DEFAULTS.items()},
        "policy": {
            **{key: policy.get(key, default) for key, default in POLICY_DEFAULTS.items()},
            "eviction": eviction_read(policy, version),
        },
        "checkpoint": None
        if checkpoint is None
        else {key: checkpoint.get(key, value) for key, value in CHECKPOINT_DEFAULTS.items()},
    }


def test_the_reading_of_a_file_follows_llmux_s_defaults_and_its_version() -> None:
    version, document = LLMUX_CONFIGS["0.5.0 config.test-checkpoint.json"]
    read = as_llmux_reads_it(document, version)

    assert read["models"]["llama-8b-test"]["eviction"] == ("retain", "checkpoint")
    assert (read["metrics_port"], read["admin_port"]) == (0, None)
    assert read["checkpoint"]["keep_images"] is True
    assert as_llmux_reads_it(LLMUX_CONFIGS["0.9.0 configs/config.example.json"][1], "0.5") != (
        as_llmux_reads_it(LLMUX_CONFIGS["0.9.0 configs/config.example.json"][1], "0.9")
    )


# --- the commands, on a fresh data directory where /tmp is not an allowed root ------------


def llmux_env(tmp_path: Path) -> dict[str, str]:
    data = tmp_path / "data"  # new for each test: nothing there, not even a database
    assert not data.exists()
    # Stated outright (the suite's own roots add /tmp): llmux's /tmp default is not allowed.
    return {"LLMUX_DATA_DIR": str(data), "LLMUX_PATH_ROOTS": f"{data},/models,/var/lib/llmux"}


def manage(env: dict[str, str], *args: str) -> str:
    done = run_manage(list(args), env)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == 0, output
    return done.stdout


def warnings_of(report: str) -> list[str]:
    return [line for line in report.splitlines() if line.startswith("warning")]


@pytest.mark.parametrize(
    ("name", "version", "document"), [(k, *v) for k, v in LLMUX_CONFIGS.items()]
)
def test_an_llmux_config_imports_unchanged_and_exports_to_what_llmux_reads_the_same(
    tmp_path: Path, name: str, version: str, document: dict[str, Any]
) -> None:
    env = llmux_env(tmp_path)
    original = tmp_path / Path(name.split()[-1]).name
    original.write_text(json.dumps(document, indent=2))
    exported = {fmt: tmp_path / f"exported.{fmt}" for fmt in ("json", "yaml")}

    report = manage(env, "llmux_import", str(original))
    manage(env, "llmux_export", "--output", str(exported["json"]))
    manage(env, "llmux_export", "--output", str(exported["yaml"]))
    again = manage(env, "llmux_import", str(exported["yaml"]))
    second = manage(env, "llmux_export")

    assert "created" in report and "nothing was written" not in report
    unused = [w for w in warnings_of(report) if "not used by this llmux" in w]
    assert len(unused) == 1 and "port" in unused[0]
    as_json = json.loads(exported["json"].read_text())
    assert yaml.safe_load(exported["yaml"].read_text()) == as_json
    assert as_llmux_reads_it(as_json, version) == as_llmux_reads_it(document, version)
    assert "settings  unchanged" in again and "0 created, 0 updated, " in again
    assert second == exported["json"].read_text()  # export -> import -> export: a fixed point


def test_a_top_level_startup_timeout_is_the_limit_of_models_without_their_own(
    tmp_path: Path,
) -> None:
    env = llmux_env(tmp_path)
    version, document = LLMUX_CONFIGS["0.9.0 configs/config.test-sleep.json"]
    document = {**copy.deepcopy(document), "startup_timeout_secs": 3600}
    path = tmp_path / "llmux.yaml"
    path.write_text(yaml.safe_dump(document))
    limit = (
        "from models_app.models import ModelDefinition, RegistryConfig; "
        "from models_app.services.runtime import startup_timeout_secs; "
        "print(startup_timeout_secs(ModelDefinition.objects.get(), RegistryConfig.load()))"
    )

    manage(env, "llmux_import", str(path))

    assert manage(env, "shell", "--no-imports", "-c", limit).strip() == "3600"
    exported = json.loads(manage(env, "llmux_export"))
    assert exported["startup_timeout_secs"] == 3600
    assert "startup_timeout_secs" not in exported["models"]["llama-8b-test"]
    assert as_llmux_reads_it(exported, version) == as_llmux_reads_it(document, version)


def with_unknown_keys() -> dict[str, Any]:
    """llmux 0.9's example with keys no llmux release knows (llmux ignores them)."""
    document = copy.deepcopy(LLMUX_CONFIGS["0.9.0 configs/config.example.json"][1])
    document["models"]["chat-7b"]["gpu_memory"] = 0.8
    document["models"]["code-7b"]["gpu_memory"] = 0.8
    document["policy"]["fairness"] = {"weights": {"chat-7b": 2}}
    document["telemetry"] = {"otlp_endpoint": "http://127.0.0.1:4317"}
    return document


def test_unknown_keys_are_refused_by_strict_else_kept_reported_once_and_written_back(
    tmp_path: Path,
) -> None:
    env = llmux_env(tmp_path)
    path = tmp_path / "llmux.json"
    path.write_text(json.dumps(with_unknown_keys()))

    refused = run_manage(["llmux_import", "--strict", str(path)], env)
    report = manage(env, "llmux_import", str(path))
    exported = json.loads(manage(env, "llmux_export"))

    output = refused.stdout + refused.stderr
    assert refused.returncode == 1 and "Traceback" not in output, output
    assert "nothing was written" in output
    unknown = [w for w in warnings_of(report) if "unknown keys" in w]
    assert len(unknown) == 1, report
    for key in ("telemetry", "policy.fairness", "models.chat-7b.gpu_memory"):
        assert f"{key}: unknown field" in output
        assert unknown[0].count(key) == 1
    assert "created   chat-7b" in report  # the strict run wrote nothing
    assert exported["models"]["chat-7b"]["gpu_memory"] == 0.8
    assert exported["policy"]["fairness"] == {"weights": {"chat-7b": 2}}
    assert exported["telemetry"] == {"otlp_endpoint": "http://127.0.0.1:4317"}


def test_a_file_llmux_would_not_run_is_refused_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "llmux.json"
    document = {
        "models": {"m": {"model_path": "x", "port": 70000}},
        "checkpoint": {"images_dir": IMAGES, "object_store": {"bucket": "b"}},
    }
    path.write_text(json.dumps(document))

    done = run_manage(["llmux_import", str(path)], llmux_env(tmp_path))

    output = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in output, output
    assert "models.m.port: 70000 is out of range" in output
    assert "checkpoint.object_store: not accepted: it holds credentials" in output
    assert "nothing was written" in output
