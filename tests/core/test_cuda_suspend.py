"""CUDA suspend of an engine tree, with the driver stood in for at its one seam."""

from __future__ import annotations

import dataclasses
import stat
import subprocess
import sys
import time
from pathlib import Path
from unittest.mock import call, create_autospec

import pytest

from llmux_site.core import lifecycle
from llmux_site.core.cuda_helper import HelperProcess, InProcess, SocketHelper, handle
from llmux_site.core.cuda_suspend import (
    CudaSuspendError,
    DriverApi,
    resume_tree,
    suspend_tree,
)
from llmux_site.core.eviction_policy import EvictionPolicy
from llmux_site.core.lifecycle import ProcessActionUnavailable
from llmux_site.core.process_actions import HostProcessActions
from llmux_site.core.switching import BringUpKind, EngineStatus
from tests.core.switch_ports import InMemoryPorts, SimModels
from tests.timeouts import ROOMY


def stand_in(states: dict[int, str]) -> DriverApi:
    """The driver as an autospec'd DriverApi whose calls move `states` like the driver."""
    driver = create_autospec(DriverApi, instance=True)
    driver.state.side_effect = states.get

    def moves(before: str, after: str):  # type: ignore[no-untyped-def]
        def step(pid: int, *_args: object) -> None:
            assert states[pid] == before, f"{pid} is {states[pid]}, not {before}"
            states[pid] = after

        return step

    driver.lock.side_effect = moves("running", "locked")
    driver.checkpoint.side_effect = moves("locked", "checkpointed")
    driver.restore.side_effect = moves("checkpointed", "locked")
    driver.unlock.side_effect = moves("locked", "running")
    return driver


def test_every_cuda_process_is_locked_before_any_is_checkpointed() -> None:
    states = {10: "running", 11: "running"}  # 12 has no CUDA
    driver = stand_in(states)

    assert suspend_tree(driver, [10, 11, 12], lock_timeout_ms=500) == [10, 11]

    assert driver.method_calls[-4:] == [
        call.lock(10, 500),
        call.lock(11, 500),
        call.checkpoint(10),
        call.checkpoint(11),
    ]
    assert states == {10: "checkpointed", 11: "checkpointed"}


def test_a_failed_checkpoint_undoes_the_others_and_says_why() -> None:
    states = {10: "running", 11: "running"}
    driver = stand_in(states)
    checkpoint = driver.checkpoint.side_effect

    def checkpoint_fails_for_11(pid: int) -> None:
        if pid == 11:
            raise CudaSuspendError("checkpoint of 11 failed: OOM")
        checkpoint(pid)

    driver.checkpoint.side_effect = checkpoint_fails_for_11
    with pytest.raises(CudaSuspendError, match=r"checkpoint of 11 failed: OOM$"):
        suspend_tree(driver, [10, 11])  # `$`: undoing it went well

    assert driver.restore.call_args_list == [call(10)]
    assert driver.unlock.call_args_list == [call(11), call(10)]  # reverse order
    assert states == {10: "running", 11: "running"}


def test_resume_finishes_whatever_state_a_suspend_left() -> None:
    # 10 fully suspended, 11 only locked (a crash between the steps), 12 untouched.
    states = {10: "checkpointed", 11: "locked", 12: "running"}
    driver = stand_in(states)

    assert resume_tree(driver, [10, 11, 12, 13]) == [11, 10]

    assert states == {10: "running", 11: "running", 12: "running"}
    states[12] = "failed"
    with pytest.raises(CudaSuspendError, match="12 is in CUDA state failed"):
        resume_tree(driver, [12])


def test_the_helper_protocol_refuses_bad_requests() -> None:
    driver = stand_in({})
    assert handle(driver, {"op": "suspend", "pids": ["1"]}) == {
        "ok": False,
        "error": "pids must be a list of integers",
    }
    assert handle(driver, {"op": "dance", "pids": []})["error"] == "unknown op 'dance'"


def test_the_helper_process_reports_a_host_without_a_driver() -> None:
    helper = HelperProcess()  # this machine has no CUDA driver
    try:
        with pytest.raises(CudaSuspendError, match="no CUDA driver"):
            helper.call("suspend", [1])
        with pytest.raises(CudaSuspendError, match="no CUDA driver"):
            helper.call("resume", [1])  # the same helper answers again
    finally:
        helper.close()


def test_the_host_s_one_helper_answers_every_process_on_its_socket(short_tmp_dir: Path) -> None:
    path = short_tmp_dir / "cuda.sock"
    helper = subprocess.Popen(
        [sys.executable, "-m", "llmux_site.core.cuda_helper", "--socket", str(path)],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not path.exists():
            assert helper.poll() is None and time.monotonic() < deadline, "no socket"
            time.sleep(0.05)
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0  # other users may not ask
        for _ in range(2):  # one connection per call, the helper stays
            with pytest.raises(CudaSuspendError, match="no CUDA driver"):
                SocketHelper(str(path)).call("suspend", [1])
    finally:
        helper.kill()
        helper.wait()
    with pytest.raises(CudaSuspendError, match="did not answer"):
        SocketHelper(str(path)).call("resume", [1])


async def test_offload_and_cuda_suspend_through_the_lifecycle(
    models: SimModels, ports: InMemoryPorts
) -> None:
    policy = EvictionPolicy.from_label("offload+cuda_suspend")
    target = models.target("m/cuda", eviction=policy)
    process = await lifecycle.cold_start(target, timeouts=ROOMY)
    running = dataclasses.replace(target, status=EngineStatus.RUNNING, process=process)
    states = {process.pid: "running"}  # the engine's leader holds the CUDA context
    actions = HostProcessActions(suspend=InProcess(stand_in(states)))

    outcome = await lifecycle.evict(
        running,
        process,
        memory_probe=ports.engine_gpu_memory,
        stop_grace=2.0,
        timeouts=ROOMY,
        process_actions=actions,
    )
    assert (outcome.status, outcome.error) == (EngineStatus.SUSPENDED, "")
    assert states == {process.pid: "checkpointed"}

    suspended = dataclasses.replace(running, status=outcome.status, evicted=outcome.evicted)
    kind, resumed = await lifecycle.bring_up(suspended, timeouts=ROOMY, process_actions=actions)
    assert (kind, resumed) == (BringUpKind.RESUME, process)
    assert states == {process.pid: "running"}
    await lifecycle.readiness(suspended, resumed, timeouts=ROOMY)
    lifecycle.kill_now(process, 2.0)

    with pytest.raises(ProcessActionUnavailable, match="CRIU is not set up"):
        await actions.restore(target)
