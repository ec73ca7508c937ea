"""Which parts of an engine definition are an administrator's (core.engine_trust)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llmux_site.core.engine_trust import OPERATOR_FLAGS, Privilege, privileges


def local(path: str) -> bool:
    return path.startswith("/models/")


def found(
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    model_path: str = "/models/m",
    simulator: bool = False,
) -> set[str]:
    return {
        str(p)
        for p in privileges(
            engine=None,
            command=(),
            model_path=model_path,
            extra_args=args,
            env=env or {},
            runs_simulator=simulator,
            is_local_path=local,
        )
    }


def test_listed_flags_with_their_values_are_an_operator_s() -> None:
    assert found(["--max-model-len", "4096", "--seed", "-1", "--enforce-eager"]) == set()
    assert found(["--dtype=half", "-tp", "2", "--sim-legacy-api", "--enforce-eager"]) == set()
    assert found(["--sim-vllm-api", "0.20", "--enforce-eager"]) == set()


def test_an_unknown_flag_is_reported_with_the_values_that_follow_it() -> None:
    assert found(["--lora-modules", "a=/x", "b=/y", "--enforce-eager"]) == {
        "extra_args: --lora-modules a=/x b=/y"
    }
    assert found(["--trust-remote-code"]) == {"extra_args: --trust-remote-code"}


def test_a_bare_item_that_no_listed_flag_takes_is_privileged() -> None:
    assert found(["--enforce-eager", "evil/model"]) == {"extra_args: evil/model"}


def test_a_path_flag_must_point_under_the_roots_or_hold_a_template() -> None:
    assert found(["--chat-template", "/models/t.jinja"]) == set()
    assert found(["--chat-template", "{% for m in messages %}{% endfor %}"]) == set()
    assert found(["--chat-template", "/etc/shadow"]) == {
        "extra_args: --chat-template /etc/shadow (outside the path roots)"
    }
    assert found(["--download-dir=../../root"]) == {
        "extra_args: --download-dir ../../root (outside the path roots)"
    }


def test_unlisted_environment_variables_are_privileged() -> None:
    assert found(env={"OMP_NUM_THREADS": "2", "LD_PRELOAD": "/x.so"}) == {"env: LD_PRELOAD=/x.so"}


def test_a_model_source_must_be_local_unless_the_engine_is_simulated() -> None:
    assert found(model_path="Qwen/Qwen2.5-7B") == {
        "model_path: Qwen/Qwen2.5-7B (not a local path under the roots)"
    }
    assert found(model_path="Qwen/Qwen2.5-7B", simulator=True) == set()


def test_commands_and_generic_engines_are_privileged() -> None:
    result = privileges(
        engine="generic",
        command=("/bin/sh", "-c", "id"),
        model_path="/models/m",
        extra_args=(),
        env={},
        runs_simulator=False,
        is_local_path=local,
    )
    assert result == {
        Privilege("engine", "generic (runs its own command)"),
        Privilege("command", "/bin/sh -c id"),
    }


def test_the_simulator_s_path_flags_are_listed_as_paths() -> None:
    assert found(["--sim-cache-dir", "/etc"]) != set()
    assert "--sim-ledger-dir" not in OPERATOR_FLAGS  # the ledger is llmux's own, never an input
