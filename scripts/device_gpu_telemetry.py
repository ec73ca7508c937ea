#!/usr/bin/env python3
"""GPU telemetry on a real GPU, read by llmux's own reader next to nvidia-smi's.

For the GPU machine (the `device` tool): reads every GPU through `NvmlProbe.telemetry()`
(llmux_site/core/gpu.py, the reader the dashboard and /metrics use) while the GPU idles,
then while a child process keeps GPU 0 busy with a torch matmul loop (and holds some
memory), and once more after it ended. Each reading is printed next to
`nvidia-smi --query-gpu=utilization.gpu,memory.used,temperature.gpu,power.draw`, taken
right after it, with NVML's v1 memory figure beside the reader's (v2, as nvidia-smi). While the load
runs, what NVML says the loading process holds per GPU (`used_by_pids_per_device`, the
per-model stacked bar's source) is printed next to nvidia-smi's compute-apps, and its host
RAM (`resident_bytes`, the sleeping models' figure). Django-free: the core alone; needs
nvidia-ml-py and torch. Prints one line per reading and writes everything as JSON to OUT.

    python3 scripts/device_gpu_telemetry.py --load-seconds 30 --samples 5 --out telemetry.json

Not part of the test suite (it needs a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmux_site.core.gpu import NvmlProbe  # noqa: E402
from llmux_site.core.gpu_telemetry import resident_bytes  # noqa: E402

MIB = 1024 * 1024
SMI_FIELDS = "utilization.gpu,memory.used,temperature.gpu,power.draw"
# The load: 16 GiB held, and bf16 matmuls on 8192² matrices for as long as asked.
LOAD = """
import sys, time, torch
seconds = float(sys.argv[1])
held = torch.empty(16 * 1024**3, dtype=torch.uint8, device="cuda")
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = a @ a
torch.cuda.synchronize()
print("ready", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(20):
        b = a @ a
    torch.cuda.synchronize()
"""


def smi(query: str, what: str = "--query-gpu") -> list[list[str]]:
    out = subprocess.run(
        ["nvidia-smi", f"{what}={query}", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [[cell.strip() for cell in line.split(",")] for line in out.splitlines() if line]


def memory_v1_used(probe: NvmlProbe) -> list[int]:
    """NVML's v1 memory reading (what the driver reserves counted as used)."""
    nvml = probe._nvml  # the script's own look at the raw library, beside the probe's
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    return [int(nvml.nvmlDeviceGetMemoryInfo(handle).used) for handle in handles]


def reading(probe: NvmlProbe, label: str) -> dict[str, Any]:
    ours = probe.telemetry()
    theirs = smi(SMI_FIELDS)
    v1 = memory_v1_used(probe)
    for gpu, row, used_v1 in zip(ours, theirs, v1, strict=False):
        print(
            f"{label:>6} GPU {gpu.id} llmux: util {gpu.utilization} %, "
            f"mem {gpu.used_bytes / MIB:.0f} MiB (v1 {used_v1 / MIB:.0f} MiB) / "
            f"{gpu.total_bytes / MIB:.0f} "
            f"MiB, {gpu.temperature_c} °C, {gpu.power_w} W of {gpu.power_limit_w} W"
            f" | nvidia-smi: {', '.join(row)}",
            flush=True,
        )
    return {
        "label": label,
        "at": time.time(),
        "llmux": [dataclasses.asdict(gpu) for gpu in ours],
        "memory_v1_used": v1,
        "nvidia_smi": theirs,
    }


def held_by_load(probe: NvmlProbe, pid: int) -> dict[str, Any]:
    per_device = probe.used_by_pids_per_device([pid])
    apps = smi("pid,used_memory", "--query-compute-apps")
    rss = resident_bytes([pid])
    print(
        f"  load pid {pid}: llmux per GPU {per_device}, host RSS {rss}"
        f" | nvidia-smi compute-apps: {apps}",
        flush=True,
    )
    return {"pid": pid, "llmux_per_device": per_device, "rss": rss, "compute_apps": apps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-seconds", type=float, default=30)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    probe = NvmlProbe()
    print("nvidia-smi:", smi("name,driver_version,power.limit"), flush=True)
    results: dict[str, Any] = {"idle": [reading(probe, "idle")]}
    load = subprocess.Popen(
        [sys.executable, "-c", LOAD, str(args.load_seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert load.stdout is not None
        if load.stdout.readline().strip() != "ready":
            raise SystemExit("the load did not start")
        time.sleep(2)  # utilisation is averaged over NVML's last sample period
        results["loaded"] = []
        for _ in range(args.samples):
            results["loaded"].append(reading(probe, "loaded"))
            time.sleep(1)
        results["held_by_load"] = held_by_load(probe, load.pid)
    finally:
        load.kill()
        load.wait()
    time.sleep(3)
    results["after"] = [reading(probe, "after")]
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
