"""`llmux_validate` runs each policy on an engine launched for it (issue 13).

A real vLLM started for a stop eviction and then validated by checkpoint failed its dump:
its uvloop held an io_uring, which engines launched for a checkpoint refuse
(core/no_io_uring.py) and CRIU cannot dump. The simulator opens no io_uring, so this test
reads the refusal itself: the seccomp filter of the engine that was checkpointed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmux_site.core.criu import Criu
from tests.checkpoints.test_worker import manage
from tests.integration.cluster import MakeCluster


def config(criu: Criu, sockets: Path) -> dict[str, Any]:
    return {
        "vllm_command": "llmux-sim",
        "policy": {"min_active_secs": 0, "request_timeout_secs": 120},
        "checkpoint": {"criu_path": criu.binary, "images_dir": str(sockets / "images")},
        "models": {
            "good": {
                "model_path": f"sim/good-{sockets.name}",
                "uds": str(sockets / "good.sock"),  # CRIU cannot dump TCP sockets here
                "extra_args": ["--sim-weights-bytes", "8MiB", "--sim-startup-seconds", "0"],
            }
        },
    }


def seccomp_mode(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line.split()[1] for line in status.splitlines() if line.startswith("Seccomp:"))


def test_validate_relaunches_an_engine_started_for_stop_before_checkpointing_it(
    cluster: MakeCluster, criu: Criu, short_tmp_dir: Path
) -> None:
    llmux = cluster(config(criu, short_tmp_dir))
    done = manage(llmux, "llmux_validate", "good", "--policies", "retain+stop,retain+checkpoint")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 of 2 policies passed" in done.stdout

    ((pid, bringup),) = llmux.llmux.query(
        "SELECT r.pid, s.bringup FROM models_app_engineruntime r, models_app_swapevent s "
        "WHERE s.id = (SELECT MAX(id) FROM models_app_swapevent)"
    )
    assert bringup == "restore"  # the engine up now is the one the checkpoint dumped
    assert seccomp_mode(pid) == "2"  # launched as a checkpoint eviction launches it
