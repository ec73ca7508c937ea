#!/usr/bin/env python3
"""CUDA suspend and CRIU checkpoints on a real GPU, driven through llmux's own lifecycle code.

For the GPU machine (the `device` tool): starts the simulator with `--device cuda` and
WEIGHTS of weights, evicts it by each policy given (`retain+cuda_suspend`,
`offload+cuda_suspend`, `retain+checkpoint`, `offload+checkpoint`, `discard+checkpoint`,
...) through `lifecycle.evict` with the worker's process actions (`HostProcessActions`:
the CUDA helper process and the driver API; with `--criu`, CRIU and an image store on
plain directories), brings it back through `lifecycle.bring_up` and `lifecycle.readiness`,
and checks weights and answer. A checkpoint eviction's image is removed after its policy
(disk). Django-free: the core alone.
GPU memory is read with nvidia-smi: the baseline before the engine starts, while it
runs, while it is evicted and after it is back. Prints one JSON object per policy and
writes them all to OUT (default: stdout only).

    python3 scripts/device_cuda_suspend.py --weights 16GiB --criu .criu/criu \
        --policy retain+cuda_suspend --policy retain+checkpoint --out results.json

Not part of the test suite (it needs a GPU, torch and cuda-bindings).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from llmux_site.core import lifecycle  # noqa: E402
from llmux_site.core.addresses import ListenAddress  # noqa: E402
from llmux_site.core.criu import Criu, bytes_of  # noqa: E402
from llmux_site.core.cuda_helper import HelperProcess  # noqa: E402
from llmux_site.core.engine_client import CallTimeouts  # noqa: E402
from llmux_site.core.eviction_policy import EvictionPolicy  # noqa: E402
from llmux_site.core.gpu import GpuProbeError, NvmlProbe  # noqa: E402
from llmux_site.core.no_io_uring import COMMAND as NO_IO_URING  # noqa: E402
from llmux_site.core.process_actions import HostProcessActions  # noqa: E402
from llmux_site.core.processes import ProcessSpec  # noqa: E402
from llmux_site.core.switching import EngineStatus, EngineTarget  # noqa: E402
from tests.checkpoints.images import DirectoryImages  # noqa: E402

TIMEOUTS = CallTimeouts(
    health=10, control=120, sleep=300, wake=300, rpc=600, inference=120, probe=120
)
MODEL = "m/cuda-suspend"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smi_used_mib() -> int:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[0])


def settled_mib(seconds: float = 1.0) -> int:
    """GPU memory in use once it stopped moving (the driver frees asynchronously)."""
    last = smi_used_mib()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = smi_used_mib()
        if now == last:
            return now
        last = now
    return last


def settle_back_to(baseline: int, seconds: float = 30.0) -> None:
    """Wait until the GPU is back to `baseline` (a killed engine frees it asynchronously)."""
    deadline = time.monotonic() + seconds
    while smi_used_mib() > baseline + 64 and time.monotonic() < deadline:
        time.sleep(0.2)


COPY_FLOOR = """
import sys, time, torch
size = int(sys.argv[1])
host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
device = torch.empty(size, dtype=torch.uint8, device="cuda")
best = float("inf")
for _ in range(3):
    torch.cuda.synchronize()
    started = time.monotonic()
    device.copy_(host, non_blocking=True)
    torch.cuda.synchronize()
    best = min(best, time.monotonic() - started)
print(best)
"""


def pinned_copy_floor(size: int) -> float:
    """Seconds for the fastest of three host(pinned)->device copies of `size` bytes.

    In a child process: a CUDA context in this one would count as engine memory left
    behind in every reading that follows.
    """
    out = subprocess.run(
        [sys.executable, "-c", COPY_FLOOR, str(size)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[-1])


def memory_probe() -> Any:
    try:
        probe = NvmlProbe()
        return probe.used_by_pids
    except GpuProbeError:
        return lambda _pids: None


async def answer_and_state(target: EngineTarget) -> tuple[str, dict[str, Any]]:
    base = target.address.base_url()
    body = {"model": MODEL, "prompt": "verify the weights", "max_tokens": 16, "temperature": 0}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/v1/completions", json=body) as resp:
            resp.raise_for_status()
            text = (await resp.json())["choices"][0]["text"]
        async with session.get(f"{base}/sim/state") as resp:
            state = await resp.json()
    return str(text), dict(state)


async def one_policy(
    label: str, weights: str, work: Path, baseline: int, criu: Criu | None
) -> dict[str, Any]:
    policy = EvictionPolicy.from_label(label)
    checkpoint = policy.process.value == "checkpoint"
    port = free_port()
    argv = [
        # As llmux starts an engine that may be checkpointed (launch.build_engine_command).
        *(NO_IO_URING if checkpoint else ()),
        sys.executable,
        "-m",
        "llmux_site.simulator",
        "serve",
        MODEL,
        "--port",
        str(port),
        "--enable-sleep-mode",
        "--device",
        "cuda",
        "--sim-weights-bytes",
        weights,
        "--sim-startup-seconds",
        "0",
    ]
    env = {
        "LLMUX_SIM_CACHE_DIR": str(work / "cache"),
        "LLMUX_SIM_LEDGER_DIR": str(work / "ledger"),
    }
    target = EngineTarget(
        name=MODEL,
        address=ListenAddress.tcp(port),
        served_name=MODEL,
        spec=ProcessSpec(argv=argv, log_path=work / f"{label}.log", env=env),
        eviction=policy,
        status=EngineStatus.NOT_STARTED,
        startup_timeout=900,
        gpu_ids=(0,),
    )
    result: dict[str, Any] = {"policy": label, "weights": weights, "baseline_mib": baseline}
    started = time.monotonic()
    process = await lifecycle.cold_start(target, timeouts=TIMEOUTS)
    result["cold_start_s"] = round(time.monotonic() - started, 3)
    running = dataclasses.replace(target, status=EngineStatus.RUNNING, process=process)
    images = DirectoryImages(work / "images")
    actions = HostProcessActions(
        suspend=HelperProcess(), criu=criu, images=images if criu is not None else None
    )
    try:
        await lifecycle.readiness(running, process, timeouts=TIMEOUTS)
        before, state = await answer_and_state(running)
        result["running_mib"] = settled_mib()
        result["weights_ok_before"] = state.get("weights_ok")

        started = time.monotonic()
        outcome = await lifecycle.evict(
            running,
            process,
            memory_probe=memory_probe(),
            stop_grace=30,
            timeouts=TIMEOUTS,
            process_actions=actions,
        )
        result["evict_s"] = round(time.monotonic() - started, 3)
        result["evicted_status"] = outcome.status.value
        result["escalated"] = outcome.escalated
        result["escalation_reason"] = outcome.error
        result["evicted_mib"] = settled_mib(3.0)

        image = images.latest(running) if checkpoint else None
        if image is not None:
            result["image_bytes"] = bytes_of(image) + bytes_of(image / "shm")
            result["cuda_mode"] = json.loads((image / "llmux-image.json").read_text())["cuda_mode"]
        back_states = (EngineStatus.SUSPENDED, EngineStatus.SLEEPING, EngineStatus.CHECKPOINTED)
        if outcome.status in back_states:
            evicted = dataclasses.replace(running, status=outcome.status, evicted=outcome.evicted)
            started = time.monotonic()
            kind, back = await lifecycle.bring_up(
                evicted, timeouts=TIMEOUTS, process_actions=actions
            )
            result["bring_up"] = kind.value
            result["bring_up_s"] = round(time.monotonic() - started, 3)
            started = time.monotonic()
            await lifecycle.readiness(evicted, back, timeouts=TIMEOUTS)
            result["readiness_s"] = round(time.monotonic() - started, 3)
            after, state = await answer_and_state(evicted)
            result["same_answer"] = after == before
            result["weights_ok_after"] = state.get("weights_ok")
            result["back_mib"] = settled_mib()
            result["same_pid"] = back.pid == process.pid
            process = back  # a restored engine is a new process with the same pid
    finally:
        lifecycle.kill_now(process, 10)
        for image_dir in (work / "images").glob("*/*"):  # the disk holds one at a time
            shutil.rmtree(image_dir, ignore_errors=True)
        await asyncio.to_thread(settle_back_to, baseline)
        helper = actions.suspend_helper
        if isinstance(helper, HelperProcess):
            helper.close()
    result["freed_to_baseline"] = (
        "evicted_mib" in result and result["evicted_mib"] <= result["baseline_mib"] + 64
    )
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default="16GiB")
    parser.add_argument("--policy", action="append", default=[])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--work", type=Path, help="keep the engine logs and cache here")
    parser.add_argument("--copy-floor-bytes", type=int, help="also time a pinned copy of this")
    parser.add_argument("--criu", help="the criu to run (for checkpoint policies)")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    baseline = settled_mib()
    if args.copy_floor_bytes:
        floor = pinned_copy_floor(args.copy_floor_bytes)
        results.append({"pinned_copy_s": round(floor, 4), "bytes": args.copy_floor_bytes})
        print(json.dumps(results[-1]), flush=True)
        settle_back_to(baseline)
    with tempfile.TemporaryDirectory(prefix="llmux-cuda-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for label in args.policy or ["retain+cuda_suspend", "offload+cuda_suspend"]:
            criu = Criu(args.criu, shm_lock_file=work / "criu.lock") if args.criu else None
            result = await one_policy(label, args.weights, work, baseline, criu)
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
