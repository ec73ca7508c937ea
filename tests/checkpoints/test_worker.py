"""Checkpoints carried out by the real worker: the commands, and kill -9 during a dump.

llmux runs as production runs it (tests/integration/test_chaos.py's Cluster: daphne and
`llmux worker` as separate processes) with the registry's criu_path set to real CRIU.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llmux_site.core.criu import Criu
from tests.integration.cluster import Cluster, MakeCluster, ask, gone, wait_for_state
from tests.integration.harness import REPO
from tests.integration.invariants import one_process_per_model, simulator_processes, wait_until

IMAGES = "SELECT id, status, error FROM checkpoints_app_checkpointimage ORDER BY id"


def checkpoint_config(criu: Criu, sockets: Path, weights: str = "16MiB") -> dict[str, Any]:
    """alpha and beta on Unix sockets (CRIU cannot dump TCP here), evicted by checkpoint."""

    def model(name: str) -> dict[str, Any]:
        return {
            "model_path": f"sim/{name}-{sockets.name}",
            "uds": str(sockets / f"{name}.sock"),
            "extra_args": ["--sim-weights-bytes", weights, "--sim-startup-seconds", "0"],
            "eviction": {"weights": "offload", "process": "checkpoint"},
        }

    return {
        "vllm_command": "llmux-sim",
        "policy": {"min_active_secs": 0, "request_timeout_secs": 120},
        "checkpoint": {"criu_path": criu.binary, "images_dir": str(sockets / "images")},
        "models": {"alpha": model("alpha"), "beta": model("beta")},
    }


def manage(llmux: Cluster, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=REPO,
        env=llmux.env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_llmux_checkpoint_builds_an_image_that_requests_and_llmux_restore_restore(
    cluster: MakeCluster, criu: Criu, short_tmp_dir: Path
) -> None:
    llmux = cluster(checkpoint_config(criu, short_tmp_dir))
    server = llmux.llmux

    built = manage(llmux, "llmux_checkpoint", "alpha")
    assert built.returncode == 0, built.stderr
    assert "image 1 of alpha" in built.stdout and "weights offload" in built.stdout
    assert server.query(IMAGES) == [(1, "ready", "")]
    assert server.states()["alpha"] == "checkpointed"

    # A client's request brings alpha back by restoring the image.
    assert ask(server, "alpha")
    assert server.swaps()[-1][1:4] == ("alpha", "succeeded", "restore")

    # Stopped, alpha is restored again from the same image (it was kept, and verified).
    server.manage(
        "from models_app.models import ModelDefinition as M; from models_app.services import "
        "control; control.stop(M.objects.get(name='alpha'))"
    )
    wait_for_state(server, "alpha", "stopped")
    restored = manage(llmux, "llmux_restore", "alpha")
    assert restored.returncode == 0, restored.stderr
    assert "alpha restored and running" in restored.stdout
    assert server.states()["alpha"] == "running"
    assert server.query("SELECT restored_count, status FROM checkpoints_app_checkpointimage") == [
        (2, "ready")
    ]
    assert ask(server, "alpha")

    # beta has no image: refused with the reason, nothing queued.
    refused = manage(llmux, "llmux_restore", "beta")
    assert refused.returncode == 1
    assert "beta has no usable checkpoint image" in refused.stderr
    missing = manage(llmux, "llmux_checkpoint", "gamma")
    assert missing.returncode == 1 and "no model named 'gamma'" in missing.stderr
    assert one_process_per_model(llmux.database) == []


def test_a_worker_killed_during_a_dump_never_leaves_a_ready_image(
    cluster: MakeCluster, criu: Criu, short_tmp_dir: Path
) -> None:
    # Enough weights that the dump takes a while (about a second here).
    llmux = cluster(checkpoint_config(criu, short_tmp_dir, weights="1GiB"))
    server = llmux.llmux
    assert ask(server, "alpha")
    (alpha,) = simulator_processes(llmux.model_path("alpha"))

    with_beta = concurrent.futures.ThreadPoolExecutor(1)
    waiting = with_beta.submit(ask, server, "beta", 120)
    wait_until(
        lambda: server.query(IMAGES)[-1:] and server.query(IMAGES)[-1][1] == "writing",
        timeout=60,
        what="alpha's dump to start",
        interval=0.01,
    )
    time.sleep(0.2)  # inside the dump
    llmux.kill_9(llmux.worker)
    assert [row[1] for row in server.query(IMAGES)] == ["writing"]  # not ready, ever

    llmux.start_worker()
    # The restarted worker marks the half-written image failed and removes its files.
    ((_, status, error),) = server.query(IMAGES)
    assert status == "failed" and "ended before the dump finished" in error
    location = server.query("SELECT location FROM checkpoints_app_checkpointimage")[0][0]
    assert not Path(location).exists()
    wait_until(lambda: gone(alpha), timeout=30, what="the interrupted engine to be gone")

    # Whatever happened to the waiting request, the next ones are served: beta, then alpha
    # cold-started (its only image failed).
    waiting.exception(timeout=120)
    with_beta.shutdown()
    assert ask(server, "beta")
    assert ask(server, "alpha")
    assert server.query(IMAGES)[0][1] == "failed"  # and it stays so
    assert one_process_per_model(llmux.database) == []
