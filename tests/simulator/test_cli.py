"""The `llmux-sim serve` command line: vLLM compatibility, sim flags, env vars, process life."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from llmux_site.simulator.cli import parse_args, parse_size
from llmux_site.simulator.faults import FaultSpecError, parse_faults
from tests.simulator.harness import SimLauncher


def test_it_accepts_unknown_vllm_flags_with_a_warning(sim: SimLauncher) -> None:
    engine = sim.start(
        "--enforce-eager",
        "--dtype",
        "bfloat16",
        "--disable-custom-all-reduce",
        "--kv-cache-dtype=fp8",
        "--trust-remote-code",
    )
    log = engine.log_text()
    for flag in ("--enforce-eager", "--dtype bfloat16", "--disable-custom-all-reduce"):
        assert f"ignoring unsupported vLLM flag {flag}\n" in log
    assert "--kv-cache-dtype=fp8" in log
    assert engine.get("/health").status == 200


def test_a_uds_engine_answers_over_the_unix_socket(sim: SimLauncher) -> None:
    engine = sim.start(uds=True)
    assert engine.address.uds is not None
    assert engine.get("/v1/models").json()["data"][0]["id"] == "llmux-sim/test"
    assert "unix:" in engine.log_text()
    engine.proc.terminate()
    assert engine.wait_exit(5) == 0
    assert Path(engine.address.uds).exists()  # vLLM leaves its socket behind too


def test_a_stale_socket_file_fails_the_start_as_in_vllm(sim: SimLauncher) -> None:
    # vLLM 0.32 binds its socket itself and fails over a stale one; llmux removes it first.
    path = sim.socket_dir / "engine0.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    engine = sim.start(uds=True, wait=False)
    assert engine.wait_exit(10) == 1
    assert "[Errno 98] Address already in use" in engine.log_text()


def test_as_vllms_cpu_build_it_refuses_sleep_mode_at_start(sim: SimLauncher) -> None:
    refused = sim.start("--sim-platform", "cpu", wait=False)  # the defaults enable it
    assert refused.wait_exit(10) == 1
    assert "ValueError: Sleep mode is not supported on current platform." in refused.log_text()

    quick = ("--sim-startup-seconds", "0", "--sim-weights-bytes", "64KiB")
    engine = sim.start(*quick, fast=False, env={"LLMUX_SIM_PLATFORM": "cpu"})
    assert engine.post("/v1/completions", {"prompt": "hi", "max_tokens": 2}).status == 200
    assert not list(sim.ledger_dir.glob("*.json"))  # no GPU memory to report


def test_sigterm_shuts_down_cleanly(sim: SimLauncher) -> None:
    engine = sim.start()
    os.kill(engine.pid, signal.SIGTERM)
    assert engine.wait_exit(5) == 0
    assert "shutting down" in engine.log_text()


def test_sim_flags_can_come_from_the_environment_and_flags_win(sim: SimLauncher) -> None:
    env = {"LLMUX_SIM_WEIGHTS_BYTES": "128KiB", "LLMUX_SIM_KV_BYTES": "8KiB"}
    engine = sim.start(env=env, fast=False)
    state = engine.state()
    assert (state["weights_bytes"], state["kv_bytes"]) == (128 * 1024, 8 * 1024)
    engine = sim.start("--sim-weights-bytes", "32KiB", env=env, fast=False)
    assert engine.state()["weights_bytes"] == 32 * 1024


def test_kv_cache_defaults_to_a_share_of_32_mib(sim: SimLauncher) -> None:
    engine = sim.start("--sim-weights-bytes", "4KiB", "--gpu-memory-utilization", "0.5", fast=False)
    assert engine.state()["kv_bytes"] == 16 * 1024 * 1024


def test_a_model_path_that_is_a_file_provides_the_weights(sim: SimLauncher, tmp_path: Path) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(5000))
    engine = sim.start(model=str(model))
    state = engine.state()
    assert (state["weights_bytes"], state["weights_ok"]) == (5000, True)
    engine.post("/sleep?level=2")
    engine.post("/wake_up")
    engine.post("/collective_rpc", {"method": "reload_weights"})
    assert engine.state()["weights_ok"] is True


def test_generated_weights_are_cached_once(sim: SimLauncher) -> None:
    sim.start()
    [weights] = list(sim.cache_dir.glob("*.weights"))
    assert weights.stat().st_size == 64 * 1024
    written = weights.stat().st_mtime_ns
    sim.start()
    assert weights.stat().st_mtime_ns == written
    assert list(sim.cache_dir.iterdir()) == [weights]


def test_child_processes_outlive_a_killed_engine_as_vllms_engine_core_does(
    sim: SimLauncher,
) -> None:
    engine = sim.start("--sim-child-processes", "2")
    children = psutil.Process(engine.pid).children()
    assert len(children) == 2
    assert all(os.getpgid(c.pid) == engine.pid for c in children)
    os.kill(engine.pid, signal.SIGKILL)  # the parent only, not the group
    engine.proc.wait()
    time.sleep(1)
    assert all(_running(child) for child in children)  # as vLLM 0.32's, seen on this host
    os.killpg(engine.pid, signal.SIGTERM)  # the group: what a stop sends
    deadline = time.monotonic() + 3
    while any(_running(child) for child in children):
        assert time.monotonic() < deadline, "children survived a signal to their group"
        time.sleep(0.02)


def _running(proc: psutil.Process) -> bool:
    # Orphans are reaped by whatever adopts them, maybe late: a zombie has exited.
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_ledger_dir_may_not_be_under_dev_shm(tmp_path: Path) -> None:
    result = _run_cli("serve", "m", "--sim-ledger-dir", "/dev/shm/ledger")
    assert result.returncode == 2
    assert "/dev/shm" in result.stderr


def test_only_the_vllm_releases_read_can_be_simulated() -> None:
    for release in ("0.14", "0.34.0", "1.0", "latest"):
        result = _run_cli("serve", "m", "--sim-vllm-api", release)
        assert result.returncode == 2, release
        assert "--sim-vllm-api" in result.stderr


def test_the_vllm_release_comes_from_the_flag_then_the_legacy_alias_then_the_default() -> None:
    env = {"LLMUX_SIM_LEGACY_API": "1"}
    assert parse_args(["m"], {}).vllm_api.version == "0.33.0"
    assert parse_args(["m"], env).vllm_api.family == "0.17"
    assert parse_args(["m", "--sim-vllm-api", "0.20.1"], env).vllm_api.version == "0.20.1"
    assert parse_args(["m"], {"LLMUX_SIM_VLLM_API": "0.16"}).vllm_api.family == "0.15"


def test_unknown_commands_are_an_error() -> None:
    assert _run_cli("train", "m").returncode == 2
    assert _run_cli("--help").returncode == 0


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "llmux_site.simulator", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_sizes_take_binary_units() -> None:
    assert parse_size("1048576") == 1 << 20
    assert parse_size("64KiB") == 64 << 10
    assert parse_size("16M") == 16 << 20
    assert parse_size("1.5GiB") == 3 << 29


def test_fault_specs_round_trip() -> None:
    specs = ["sleep=noop", "crash=sleep", "crash=wake", "wake-fail-after=3", "decode=stall"]
    assert sorted(parse_faults(specs).specs()) == sorted(specs)
    for bad in ["sleep", "wake=noop", "crash=everything", "wake-fail-after=-1", "nap=1"]:
        with pytest.raises(FaultSpecError):
            parse_faults([bad])


def test_startup_takes_the_configured_time(sim: SimLauncher) -> None:
    started = time.monotonic()
    sim.start("--sim-startup-seconds", "0.5")
    assert time.monotonic() - started >= 0.5
