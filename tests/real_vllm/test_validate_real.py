"""`llmux_validate` on a real vLLM CPU engine behind `llmux serve` (issue 13): the CPU build
cannot sleep, so sleep-based policies are refused, never passed; stop and CRIU checkpoint
are verified (the process is gone while evicted, the same temperature-0 answer after)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmux_site.core.criu import Criu
from tests.integration.harness import REPO, Llmux, new_llmux
from tests.integration.test_engine_death import engine_pid, engine_tree, still_running
from tests.plugins.data_dir import TEST_PATH_ROOTS
from tests.plugins.real_vllm import RealVllm

pytestmark = pytest.mark.timeout(1800)  # several cold starts, a dump and a restore

POLICIES = "offload+keep_running,discard+keep_running,retain+stop,retain+checkpoint"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Llmux]:
    server = new_llmux(tmp_path)
    yield server
    server.stop()


def llmux_validate(server: Llmux, model: str, policies: str) -> subprocess.CompletedProcess[str]:
    """`manage.py llmux_validate` as an operator runs it beside a running llmux."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env |= {"LLMUX_DATA_DIR": str(server.data_dir), "LLMUX_PATH_ROOTS": TEST_PATH_ROOTS}
    return subprocess.run(
        [sys.executable, "manage.py", "llmux_validate", model, "--policies", policies],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )


def test_validate_refuses_sleep_on_the_cpu_build_and_verifies_stop_and_checkpoint(
    served: Llmux, real_vllm: RealVllm, criu: Criu, short_tmp_dir: Path
) -> None:
    served.start(
        real_vllm.config(
            {"tiny": real_vllm.entry(0, uds=str(short_tmp_dir / "a.sock"))},
            policy={"min_active_secs": 0, "request_timeout_secs": 900},
            checkpoint={"criu_path": criu.binary, "images_dir": str(short_tmp_dir / "images")},
        )
    )
    done = llmux_validate(served, "tiny", POLICIES)
    report = f"{done.stdout}\n{done.stderr[-3000:]}"
    assert done.returncode == 1, report  # not every policy passed: two were refused
    assert "2 of 4 policies passed (2 refused)" in done.stdout, report

    runs = served.query(
        "SELECT policy, verdict, answer_matches, error FROM models_app_validationrun"
    )
    verdicts = {policy: (verdict, matches) for policy, verdict, matches, _ in runs}
    assert verdicts == {
        "offload+keep_running": ("refused", None),
        "discard+keep_running": ("refused", None),
        "retain+stop": ("pass", 1),
        "retain+checkpoint": ("pass", 1),
    }, runs
    refusals = [error for _, verdict, _, error in runs if verdict == "refused"]
    assert all("needs vLLM sleep mode" in error for error in refusals), refusals
    swaps = served.query("SELECT bringup, escalated FROM models_app_swapevent ORDER BY id")
    assert ("restore", 0) in swaps, swaps  # the checkpoint came back from its image
    assert not any(escalated for _, escalated in swaps), swaps

    pid = engine_pid(served, "tiny")
    tree = engine_tree(pid) if pid is not None else []
    assert served.stop() == 0
    assert still_running(tree) == []
