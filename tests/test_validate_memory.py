"""`llmux_validate` where no GPU probe sees the engine: unverified, never a pass.

Two simulated engines no probe reads, through a real worker: one plays vLLM's CPU build
(`--sim-platform cpu`: no sleep mode, no GPU memory reported), the other sleeps but
reports to a ledger llmux does not read, as a GPU engine on a host without NVML would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.checkpoints.test_worker import manage
from tests.integration.cluster import MakeCluster
from tests.plugins.engines import free_port

FAST = ["--sim-weights-bytes", "1MiB", "--sim-startup-seconds", "0"]


def config(elsewhere: Path) -> dict[str, Any]:
    return {
        "vllm_command": "llmux-sim",
        "policy": {"min_active_secs": 0, "request_timeout_secs": 120},
        "models": {
            "cpu": {
                "model_path": "sim/cpu",
                "port": free_port(),
                "sleep_level": 5,
                "extra_args": [*FAST, "--sim-platform", "cpu"],
            },
            "unseen": {
                "model_path": "sim/unseen",
                "port": free_port(),
                "sleep_level": 1,
                "extra_args": FAST,
                "env": {"LLMUX_SIM_LEDGER_DIR": str(elsewhere)},
            },
        },
    }


def row(stdout: str, policy: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(policy))


def test_memory_no_probe_reads_is_unverified_and_sleep_without_sleep_mode_refused(
    cluster: MakeCluster, tmp_path: Path
) -> None:
    llmux = cluster(config(tmp_path / "another-ledger"))

    cpu = manage(llmux, "llmux_validate", "cpu", "--policies", "retain+stop,offload+keep_running")
    assert cpu.returncode == 1, cpu.stdout + cpu.stderr
    assert " pass " in row(cpu.stdout, "retain+stop")  # its processes are gone: verified
    assert " refused " in row(cpu.stdout, "offload+keep_running")
    assert "needs vLLM sleep mode, which this host's platform lacks" in cpu.stdout
    assert "1 of 2 policies passed (1 refused)" in cpu.stdout

    unseen = manage(llmux, "llmux_validate", "unseen", "--policies", "offload+keep_running")
    assert unseen.returncode == 1, unseen.stdout + unseen.stderr
    offload = row(unseen.stdout, "offload+keep_running")
    assert " unverified " in offload and offload.endswith("same")
    assert "GPU memory could not be read on this host" in unseen.stdout
    assert "0 of 1 policies passed (1 unverified)" in unseen.stdout

    runs = llmux.llmux.query(
        "SELECT model_name, policy, verdict, passed FROM models_app_validationrun ORDER BY id"
    )
    assert runs == [
        ("cpu", "retain+stop", "pass", 1),
        ("cpu", "offload+keep_running", "refused", 0),
        ("unseen", "offload+keep_running", "unverified", 0),
    ]
    checks = llmux.llmux.query(
        "SELECT from_name, eviction_process, memory_check FROM models_app_swapevent"
        " WHERE to_name = '' ORDER BY id"
    )
    assert checks == [("cpu", "stop", "exited"), ("unseen", "keep_running", "unknown")]
    # Each policy ran as the model's eviction override; the models had none, and have none.
    overrides = llmux.llmux.query(
        "SELECT override_weights, override_process FROM models_app_engineruntime"
    )
    assert set(overrides) == {("", "")}
