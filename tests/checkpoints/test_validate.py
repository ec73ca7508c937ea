"""`manage.py llmux_validate` against simulator models through a real worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmux_site.core.criu import Criu
from tests.checkpoints.test_worker import manage
from tests.integration.cluster import MakeCluster


def config(criu: Criu, sockets: Path) -> dict[str, Any]:
    def model(name: str, *extra: str) -> dict[str, Any]:
        return {
            "model_path": f"sim/{name}-{sockets.name}",
            "uds": str(sockets / f"{name}.sock"),  # CRIU cannot dump TCP sockets here
            "extra_args": ["--sim-weights-bytes", "8MiB", "--sim-startup-seconds", "0", *extra],
        }

    return {
        "vllm_command": "llmux-sim",
        "policy": {"min_active_secs": 0, "request_timeout_secs": 120},
        "checkpoint": {"criu_path": criu.binary, "images_dir": str(sockets / "images")},
        "models": {
            "good": model("good"),
            "broken": model("broken", "--sim-fault", "corrupt-on-wake"),
        },
    }


def test_validate_passes_every_supported_policy_and_fails_a_corrupting_engine(
    cluster: MakeCluster, criu: Criu, short_tmp_dir: Path
) -> None:
    llmux = cluster(config(criu, short_tmp_dir))

    # Every policy this host supports (no CUDA driver here: the cuda_suspend ones are left
    # out of the default list), each evicted, brought back, and answering the same.
    passed = manage(llmux, "llmux_validate", "good")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    lines = passed.stdout.splitlines()
    for policy in (
        "offload+keep_running",
        "discard+keep_running",
        "discard+checkpoint",
        "offload+stop",
    ):
        row = next(line for line in lines if line.startswith(policy))
        assert " pass " in row and row.endswith("same"), row
    assert "cuda_suspend" not in passed.stdout
    assert "4 of 4 policies passed" in passed.stdout

    failed = manage(llmux, "llmux_validate", "broken", "--policies", "offload+keep_running")
    assert failed.returncode == 1
    assert "checksum does not verify" in failed.stdout and "0 of 1 policies passed" in failed.stdout

    # An explicitly asked policy this host cannot do fails, saying why.
    unsupported = manage(llmux, "llmux_validate", "good", "--policies", "retain+cuda_suspend")
    assert unsupported.returncode == 1 and "not available on this host" in unsupported.stdout
    rows = llmux.llmux.query(
        "SELECT model_name, policy, passed FROM models_app_validationrun ORDER BY id"
    )
    assert len(rows) == 6 and rows[4] == ("broken", "offload+keep_running", 0)
