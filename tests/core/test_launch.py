"""Engine command lines and environments built from model definitions."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from llmux_site.core.addresses import ListenAddress
from llmux_site.core.eviction_policy import EvictionPolicy
from llmux_site.core.launch import (
    SIMULATOR_COMMAND,
    LaunchError,
    build_engine_command,
    resolve_program,
    sleep_mode_in,
)

TCP = ListenAddress.tcp(8001)
UNIX = ListenAddress.unix("/run/llmux/qwen.sock")


def test_a_vllm_engine_is_vllm_serve_with_sleep_mode_and_dev_mode() -> None:
    command = build_engine_command(
        "vllm",
        model_path="/models/qwen",
        address=TCP,
        extra_args=["--max-model-len", "4096"],
    )

    assert command.argv == [
        "vllm",
        "serve",
        "/models/qwen",
        "--host",
        "127.0.0.1",
        "--port",
        "8001",
        "--enable-sleep-mode",
        "--max-model-len",
        "4096",
    ]
    assert command.env == {"NO_COLOR": "1", "VLLM_SERVER_DEV_MODE": "1"}
    assert command.warnings == []


def test_a_vllm_command_string_is_split_into_words_without_a_shell() -> None:
    command = build_engine_command(
        "vllm",
        model_path="m",
        address=UNIX,
        extra_args=[],
        vllm_command="/opt/venv/bin/python -m 'vllm.entrypoints.cli.main' $HOME;",
    )

    assert command.argv[:5] == [
        "/opt/venv/bin/python",
        "-m",
        "vllm.entrypoints.cli.main",
        "$HOME;",
        "serve",
    ]
    assert command.argv[5:] == ["m", "--uds", "/run/llmux/qwen.sock", "--enable-sleep-mode"]


def test_a_vllm_command_list_is_used_as_is() -> None:
    command = build_engine_command(
        "vllm", model_path="m", address=TCP, extra_args=[], vllm_command=["uv", "run", "vllm"]
    )

    assert command.argv[:4] == ["uv", "run", "vllm", "serve"]


def test_gpu_ids_criu_and_the_models_own_env_shape_the_environment() -> None:
    command = build_engine_command(
        "vllm",
        model_path="m",
        address=UNIX,
        extra_args=[],
        gpu_ids=[2, 3],
        criu_compatible=True,
        env={"HF_HOME": "/data/hf", "NO_COLOR": "0"},
    )

    assert command.env == {
        "NO_COLOR": "0",  # the model's own env wins
        "VLLM_SERVER_DEV_MODE": "1",
        "CUDA_VISIBLE_DEVICES": "2,3",
        "UV_USE_IO_URING": "0",
        "USE_LIBUV": "0",
        "HF_HOME": "/data/hf",
    }


def test_sleep_mode_is_not_repeated_when_extra_args_already_enable_it() -> None:
    command = build_engine_command(
        "vllm", model_path="m", address=TCP, extra_args=["--enable-sleep-mode"]
    )

    assert command.argv.count("--enable-sleep-mode") == 1


OFFLOAD = EvictionPolicy.from_label("offload+keep_running")
STOP = EvictionPolicy.from_label("retain+stop")


@pytest.mark.parametrize(
    ("eviction", "sleep_mode", "flag"),
    [
        (OFFLOAD, True, True),  # a GPU host, a policy that sleeps
        (STOP, True, False),  # nothing calls /sleep: vLLM runs without sleep mode
        (OFFLOAD, False, False),  # vLLM's CPU build refuses the flag at start
        (None, True, True),  # the policy is not known: it may sleep
    ],
)
def test_the_sleep_flag_follows_the_eviction_policy_and_the_platform(
    eviction: EvictionPolicy | None, sleep_mode: bool, flag: bool
) -> None:
    command = build_engine_command(
        "vllm", model_path="m", address=TCP, eviction=eviction, sleep_mode=sleep_mode
    )

    assert ("--enable-sleep-mode" in command.argv) is flag
    assert sleep_mode_in(command.argv) is flag
    assert command.warnings == []


def test_extra_args_that_turn_sleep_mode_on_where_there_is_none_are_warned_about() -> None:
    command = build_engine_command(
        "vllm", model_path="m", address=TCP, extra_args=["--enable-sleep-mode"], sleep_mode=False
    )

    assert command.argv.count("--enable-sleep-mode") == 1  # the administrator's choice
    assert "refuses to start" in command.warnings[0]


def test_the_served_model_name_is_passed_to_the_engine() -> None:
    named = build_engine_command("vllm", model_path="/models/q", address=TCP, served_model_name="q")
    unnamed = build_engine_command("vllm", model_path="/models/q", address=TCP)
    already = build_engine_command(
        "simulator",
        model_path="/models/q",
        address=TCP,
        served_model_name="q",
        extra_args=["--served-model-name", "other"],
    )

    at = named.argv.index("--served-model-name")
    assert named.argv[at + 1] == "q"
    assert "--served-model-name" not in unnamed.argv  # vLLM answers to the model path
    assert already.argv.count("--served-model-name") == 1


def test_a_simulator_engine_runs_the_simulator_module_like_vllm() -> None:
    command = build_engine_command(
        "simulator",
        model_path="sim/qwen-0.5b",
        address=TCP,
        extra_args=["--sim-weights-mb", "8"],
        vllm_command="ignored",
    )

    assert command.argv == [
        sys.executable,
        "-m",
        "llmux_site.simulator",
        "serve",
        "sim/qwen-0.5b",
        "--host",
        "127.0.0.1",
        "--port",
        "8001",
        "--enable-sleep-mode",
        "--sim-weights-mb",
        "8",
    ]
    assert command.env["VLLM_SERVER_DEV_MODE"] == "1"


def test_llmux_sim_as_vllm_command_is_found_beside_the_interpreter_when_not_on_path(
    tmp_path: Path,
) -> None:
    beside = Path(sys.executable).parent / "llmux-sim"
    expected = [str(beside)] if os.access(beside, os.X_OK) else list(SIMULATOR_COMMAND)

    program = resolve_program("llmux-sim --sim-flag", search_path=str(tmp_path))

    assert program == [*expected, "--sim-flag"]


def test_llmux_sim_on_path_is_used_from_path(tmp_path: Path) -> None:
    script = tmp_path / "llmux-sim"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)

    assert resolve_program("llmux-sim", search_path=str(tmp_path)) == ["llmux-sim"]


def test_a_generic_engine_substitutes_placeholders_per_argv_item() -> None:
    command = build_engine_command(
        "generic",
        model_path="/models/tiny model",
        address=TCP,
        extra_args=["--threads", "4"],
        generic_argv=["llama-server", "-m", "{model_path}", "--host={host}", "--port", "{port}"],
        gpu_ids=[0],
    )

    assert command.argv == [
        "llama-server",
        "-m",
        "/models/tiny model",
        "--host=127.0.0.1",
        "--port",
        "8001",
        "--threads",
        "4",
    ]
    assert command.env == {"NO_COLOR": "1", "CUDA_VISIBLE_DEVICES": "0"}


def test_a_generic_template_is_not_expanded_beyond_its_placeholders() -> None:
    command = build_engine_command(
        "generic",
        model_path="m",
        address=UNIX,
        extra_args=[],
        generic_argv=["srv", "--socket", "{uds}", "$HOME", "{other}", '{"json": 1}', "*"],
    )

    assert command.argv == ["srv", "--socket", UNIX.uds, "$HOME", "{other}", '{"json": 1}', "*"]


@pytest.mark.parametrize(
    ("template", "address", "message"),
    [
        (["srv", "--port", "{port}"], UNIX, r"uses \{port\} but the model listens on a unix"),
        (["srv", "--host", "{host}"], UNIX, r"uses \{host\}"),
        (["srv", "--uds", "{uds}"], TCP, r"uses \{uds\} but the model listens on a TCP port"),
        ([], TCP, "needs an argv template"),
        ("srv --port {port}", TCP, "generic_argv must be a list of strings"),
    ],
)
def test_a_generic_template_that_does_not_fit_the_address_is_rejected(
    template: list[str], address: ListenAddress, message: str
) -> None:
    with pytest.raises(LaunchError, match=message):
        build_engine_command(
            "generic", model_path="m", address=address, extra_args=[], generic_argv=template
        )


def test_a_generic_template_without_an_address_placeholder_is_warned_about() -> None:
    command = build_engine_command(
        "generic", model_path="m", address=TCP, extra_args=[], generic_argv=["srv", "{model_path}"]
    )

    assert len(command.warnings) == 1
    assert "127.0.0.1:8001" in command.warnings[0]


@pytest.mark.parametrize(
    ("extra_args", "message"),
    [
        ("--max-model-len 4096", "extra_args must be a list of strings"),
        (["--max-model-len", 4096], r"extra_args\[1\] is int \(4096\)"),
        (["--ok", None], r"extra_args\[1\] is NoneType"),
        (["--chat-template", "a\x00b"], r"extra_args\[1\] contains a NUL byte"),
        (["--port", "9000"], "must not contain --port"),
        (["--uds=/tmp/x.sock"], "must not contain --uds"),
        (["--host", "0.0.0.0"], "must not contain --host"),
    ],
)
def test_bad_extra_args_are_rejected_naming_the_item(extra_args: object, message: str) -> None:
    with pytest.raises(LaunchError, match=message):
        build_engine_command("vllm", model_path="m", address=TCP, extra_args=extra_args)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["1ABC", "A-B", "A B", "", "A=B", "ÄB"])
def test_bad_environment_names_are_rejected(name: str) -> None:
    with pytest.raises(LaunchError, match="invalid environment variable name"):
        build_engine_command("vllm", model_path="m", address=TCP, extra_args=[], env={name: "1"})


def test_environment_values_must_be_strings() -> None:
    with pytest.raises(LaunchError, match=r"env\['A'\] is int"):
        build_engine_command("vllm", model_path="m", address=TCP, extra_args=[], env={"A": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "docker"}, "unknown engine kind 'docker'"),
        ({"model_path": ""}, "model_path is empty"),
        ({"gpu_ids": [0, -1]}, "non-negative integers"),
        ({"gpu_ids": [1, 1]}, "duplicates"),
        ({"vllm_command": ""}, "vllm_command is empty"),
    ],
)
def test_other_bad_definitions_are_rejected(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"model_path": "m", "address": TCP, "extra_args": []}
    arguments.update(kwargs)
    kind = arguments.pop("kind", "vllm")
    with pytest.raises(LaunchError, match=message):
        build_engine_command(kind, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "tp_args",
    [
        ["--tensor-parallel-size", "2"],
        ["--tensor-parallel-size=4"],
        ["-tp", "2"],
    ],
)
def test_tensor_parallel_without_eager_and_custom_all_reduce_off_is_warned_about(
    tp_args: list[str],
) -> None:
    command = build_engine_command("vllm", model_path="m", address=TCP, extra_args=tp_args)

    assert len(command.warnings) == 1
    assert "--enforce-eager and --disable-custom-all-reduce are missing" in command.warnings[0]


def test_tensor_parallel_missing_one_flag_names_that_flag() -> None:
    command = build_engine_command(
        "vllm",
        model_path="m",
        address=TCP,
        extra_args=["--tensor-parallel-size", "2", "--enforce-eager"],
    )

    assert command.warnings == [
        "tensor-parallel-size is 2 but --disable-custom-all-reduce is missing: CUDA suspend "
        "and CRIU checkpoints of a TP>1 engine need --enforce-eager and "
        "--disable-custom-all-reduce"
    ]


@pytest.mark.parametrize(
    "extra_args",
    [
        ["--tensor-parallel-size", "1"],
        ["--tensor-parallel-size", "2", "--enforce-eager", "--disable-custom-all-reduce"],
        [],
    ],
)
def test_no_tensor_parallel_warning_when_not_needed(extra_args: list[str]) -> None:
    command = build_engine_command("vllm", model_path="m", address=TCP, extra_args=extra_args)

    assert command.warnings == []


def test_a_tensor_parallel_size_that_is_not_a_number_is_rejected() -> None:
    with pytest.raises(LaunchError, match="--tensor-parallel-size needs an integer"):
        build_engine_command(
            "vllm", model_path="m", address=TCP, extra_args=["--tensor-parallel-size", "two"]
        )
