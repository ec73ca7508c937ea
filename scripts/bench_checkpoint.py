#!/usr/bin/env python3
"""Benchmark CRIU dump and restore of a simulated engine against dd on the same disk.

Each round cold-starts the simulator (CPU memory backend, weights loaded and awake) on a Unix
socket and dumps it with `llmux_site.core.criu.Criu`, then writes as many bytes with
`dd if=/dev/zero` (without fsync, then timing a `sync`; and with conv=fdatasync), restores the
image, checks that the engine answers with intact weights, and reads the image's pages file
with dd and into new anonymous memory (what a restore does). All files live in one directory
on a disk (never tmpfs); an untimed `sync` runs before each timed write, so no step pays for
another's dirty pages, and reads find the page cache warm. The first round only warms up.
Prints a markdown section with the medians of `--runs` rounds, or every figure with `--json`.
Not part of the test suite; `scripts/bench_report.py` runs it.

    .venv/bin/python scripts/bench_checkpoint.py [--weights 1GiB] [--runs 3] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import mmap
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from llmux_site.core import lifecycle, supervisor
from llmux_site.core.addresses import ListenAddress
from llmux_site.core.criu import Criu
from llmux_site.core.criu_shm import clean_link_remaps
from llmux_site.core.engine_client import open_session
from llmux_site.core.eviction_policy import EvictionPolicy
from llmux_site.core.launch import build_engine_command
from llmux_site.core.processes import EngineProcess, ProcessSpec, set_child_subreaper
from llmux_site.core.switching import EngineStatus, EngineTarget
from llmux_site.simulator.cli import parse_size

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
MB = 1_000_000
MODEL = "bench/criu"
STOP_GRACE = 5.0
# Filesystems whose "disk" is memory: a dd or CRIU figure there says nothing about the disk.
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs", "devtmpfs"})


@dataclasses.dataclass(frozen=True, slots=True)
class RunFigures:
    """Bytes and wall seconds of one round (cached shares from 0 to 1)."""

    image_bytes: int
    dump_s: float
    dump_sync_s: float  # the `sync` right after the dump: its image reaching the disk
    dd_write_bytes: int
    dd_write_s: float
    dd_write_sync_s: float  # the `sync` right after the dd write
    dd_fdatasync_s: float
    image_cached: float | None  # share of the image in the page cache before the restore
    restore_s: float
    ready_s: float  # restore done -> /health and a one-token probe answered
    pages_bytes: int  # the biggest pages-*.img, which dd reads
    pages_cached: float | None
    dd_read_s: float
    fresh_read_s: float  # the pages file read into new anonymous memory, as CRIU restores


# --- the engine ------------------------------------------------------------------------


def engine_target(root: Path, weights: int) -> EngineTarget:
    """The simulator on a Unix socket under `root` (CRIU cannot dump its TCP socket here)."""
    address = ListenAddress.unix(str(root / "engine.sock"))
    extra = ["--sim-weights-bytes", str(weights), "--sim-startup-seconds", "0"]
    command = build_engine_command("simulator", model_path=MODEL, address=address, extra_args=extra)
    env = {
        "LLMUX_SIM_LEDGER_DIR": str(root / "ledger"),
        # Kept across runs: the weights file is generated once, on the first cold start.
        "LLMUX_SIM_CACHE_DIR": str(root / "cache"),
        **command.env,
    }
    spec = ProcessSpec(argv=command.argv, log_path=root / "engine.log", env=env)
    return EngineTarget(
        name=MODEL,
        address=address,
        served_name=MODEL,
        spec=spec,
        eviction=EvictionPolicy.from_label("retain+stop"),
        status=EngineStatus.NOT_STARTED,
        startup_timeout=300.0,
    )


async def _sim_state(target: EngineTarget) -> dict[str, Any]:
    async with open_session(target.address) as session:
        url = target.address.base_url() + "/sim/state"
        async with session.get(url) as reply:
            reply.raise_for_status()
            return dict(await reply.json())


def check_weights(target: EngineTarget, weights: int, when: str) -> None:
    """Fail unless the engine is awake with all its weights in memory, intact."""
    state = asyncio.run(_sim_state(target))
    held = (state["weights_ok"], state["weights_location"], state["weights_bytes"])
    if not state["awake"] or held != (True, "device", weights):
        raise SystemExit(f"engine {when}: weights not intact in memory: {state}")


# --- timed steps -----------------------------------------------------------------------


def timed(argv: list[str]) -> float:
    """Wall seconds of one command (failing loudly), process start included as for criu."""
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)
    return time.monotonic() - started


def timed_sync() -> float:
    started = time.monotonic()
    os.sync()
    return time.monotonic() - started


def cached_share(paths: list[Path]) -> float | None:
    """The share of these files' bytes in the page cache (util-linux fincore), None if unknown."""
    if not paths or shutil.which("fincore") is None:
        return None
    argv = ["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE"]
    done = subprocess.run([*argv, *map(str, paths)], capture_output=True, text=True, check=False)
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or len(rows) != len(paths):
        return None
    size = sum(int(size) for _, size in rows)
    # fincore counts whole pages, so a file's tail page can make RES exceed SIZE.
    return min(1.0, sum(int(res) for res, _ in rows) / size) if size else 1.0


def dump_and_write(criu: Criu, process: EngineProcess, run_dir: Path) -> dict[str, Any]:
    """Dump the engine, then write the image's size with dd, without and with fdatasync."""
    os.sync()
    dumped = criu.dump(process, run_dir / "image")
    dump_sync_s = timed_sync()
    count = max(1, round(dumped.bytes / MIB))
    dd = ["dd", "if=/dev/zero", "bs=1M", f"count={count}"]
    dd_write_s = timed([*dd, f"of={run_dir / 'dd-write.bin'}"])
    dd_write_sync_s = timed_sync()
    dd_fdatasync_s = timed([*dd, f"of={run_dir / 'dd-fdatasync.bin'}", "conv=fdatasync"])
    os.sync()
    return {
        "image_bytes": dumped.bytes,
        "dump_s": dumped.seconds,
        "dump_sync_s": dump_sync_s,
        "dd_write_bytes": count * MIB,
        "dd_write_s": dd_write_s,
        "dd_write_sync_s": dd_write_sync_s,
        "dd_fdatasync_s": dd_fdatasync_s,
    }


def read_into_fresh_memory(path: Path) -> float:
    """Seconds to read `path` into new anonymous memory: CRIU's restore preadv()s the pages
    file into fresh mappings, so every page is faulted in and zeroed before it is copied."""
    size = path.stat().st_size
    started = time.monotonic()
    with mmap.mmap(-1, size) as memory, path.open("rb", buffering=0) as handle:
        view, done = memoryview(memory), 0
        while done < size:
            got = handle.readinto(view[done:])
            if not got:
                break
            done += got
        view.release()
    return time.monotonic() - started


def restore_and_read(criu: Criu, target: EngineTarget, weights: int, image: Path) -> dict[str, Any]:
    """Restore the image, check the engine, then read its pages file with dd and into memory."""
    image_cached = cached_share([p for p in image.iterdir() if p.is_file()])
    restored = criu.restore(image)
    try:
        started = time.monotonic()
        asyncio.run(lifecycle.readiness(target, restored.process))
        ready_s = time.monotonic() - started
        check_weights(target, weights, "after the restore")
    finally:
        supervisor.stop(restored.process, grace=STOP_GRACE)
    pages = max(image.glob("pages-*.img"), key=lambda p: p.stat().st_size)
    pages_cached = cached_share([pages])
    return {
        "image_cached": image_cached,
        "restore_s": restored.seconds,
        "ready_s": ready_s,
        "pages_bytes": pages.stat().st_size,
        "pages_cached": pages_cached,
        "dd_read_s": timed(["dd", f"if={pages}", "of=/dev/null", "bs=1M"]),
        "fresh_read_s": read_into_fresh_memory(pages),
    }


def one_run(criu: Criu, target: EngineTarget, weights: int, run_dir: Path) -> RunFigures:
    """Cold start, dump, dd writes, restore, reads; no engine is left running."""
    process = asyncio.run(lifecycle.cold_start(target))
    try:
        check_weights(target, weights, "before the dump")
        written = dump_and_write(criu, process, run_dir)
    finally:
        supervisor.stop(process, grace=STOP_GRACE)  # already gone after a dump
    return RunFigures(**written, **restore_and_read(criu, target, weights, run_dir / "image"))


# --- the setting -----------------------------------------------------------------------


def criu_binary() -> str:
    """scripts/install-criu.sh's criu (idempotent; the path is its last stdout line)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "install-criu.sh")], capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def filesystem_of(path: Path) -> str:
    """The type of the filesystem `path` lives on (the longest mount point above it)."""
    best, kind = "", "?"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mount, fstype = line.split()[1:3]
        inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, fstype
    return kind


def leftovers(root: Path) -> list[str]:
    """Simulator processes of this benchmark and CRIU link-remap files still around."""
    found = [f"/dev/shm/{p.name}" for p in Path("/dev/shm").glob("link_remap.*")]  # noqa: S108
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if str(root) in " ".join(proc.info["cmdline"] or ()):
            found.append(f"pid {proc.info['pid']}: {' '.join(proc.info['cmdline'])}")
    return found


@contextlib.contextmanager
def bench_dir(parent: Path) -> Iterator[Path]:
    """A fresh short directory (Unix socket paths stay < 108 bytes), removed at the end."""
    root = Path(tempfile.mkdtemp(dir=parent, prefix="bk"))
    try:
        yield root
    finally:
        clean_link_remaps()
        shutil.rmtree(root, ignore_errors=True)
        left = leftovers(root)
        for item in left:
            print(f"bench_checkpoint left behind: {item}", file=sys.stderr)
    if left:  # only reached without an exception, which would say more
        raise SystemExit(1)


def benchmark(
    criu: Criu, parent: Path, weights: int, *, runs: int, warmup: int
) -> list[RunFigures]:
    """`warmup` rounds, thrown away, then `runs` measured rounds."""
    with bench_dir(parent) as root:
        target = engine_target(root, weights)
        figures = []
        for index in range(warmup + runs):
            run_dir = root / f"run{index}"
            run_dir.mkdir()
            figures.append(one_run(criu, target, weights, run_dir))
            kind = f"warm-up {index + 1}" if index < warmup else f"run {index - warmup + 1}"
            print(f"{kind}: {figures[-1]}", file=sys.stderr)
            # Each round starts from the same page cache: only the weights file stays in it.
            shutil.rmtree(run_dir)
        return figures[warmup:]


# --- the report ------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model and count, kernel, and the 1-minute load average (how busy it was before)."""
    cpu = platform.processor() or "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "load_1min": os.getloadavg()[0],
    }


def criu_version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return " ".join(done.stdout.replace("Version:", "").split()) or "?"


# Steps of the table: (label, bytes field, seconds fields summed within a run).
STEPS = {
    "dump": ("criu dump (image not synced)", "image_bytes", ("dump_s",)),
    "dd_write": ("dd write, bs=1M (not synced)", "dd_write_bytes", ("dd_write_s",)),
    "dump_sync": ("criu dump, then `sync`", "image_bytes", ("dump_s", "dump_sync_s")),
    "dd_write_sync": ("dd write, then `sync`", "dd_write_bytes", ("dd_write_s", "dd_write_sync_s")),
    "dd_fdatasync": ("dd write, bs=1M conv=fdatasync", "dd_write_bytes", ("dd_fdatasync_s",)),
    "restore": ("criu restore (until criu exits)", "image_bytes", ("restore_s",)),
    "dd_read": ("dd read of the image's pages file", "pages_bytes", ("dd_read_s",)),
    "fresh_read": ("read of it into new anonymous memory", "pages_bytes", ("fresh_read_s",)),
}
# Ratios of MB/s reported: (criu step, reference step).
RATIOS = (
    ("dump", "dd_write"),
    ("dump", "dd_fdatasync"),
    ("dump_sync", "dd_write_sync"),
    ("restore", "dd_read"),
    ("restore", "fresh_read"),
)


def medians(figures: list[RunFigures]) -> dict[str, dict[str, float]]:
    """Per step: median bytes, seconds and MB/s, and the lowest and highest MB/s of a run."""
    out = {}
    for step, (_, size, seconds) in STEPS.items():
        low, mid, high = rate(figures, size, *seconds)
        out[step] = {
            "bytes": statistics.median(getattr(f, size) for f in figures),
            "seconds": statistics.median(sum(getattr(f, s) for s in seconds) for f in figures),
            "mb_per_s": mid,
            "mb_per_s_low": low,
            "mb_per_s_high": high,
        }
    return out


def rate(figures: list[RunFigures], size: str, *seconds: str) -> tuple[float, float, float]:
    """Lowest, median and highest MB/s over the runs (`seconds` summed within a run)."""
    rates = [getattr(f, size) / sum(getattr(f, s) for s in seconds) / MB for f in figures]
    return min(rates), statistics.median(rates), max(rates)


def tables(steps: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        "| step | bytes | seconds | MB/s | MB/s, slowest to fastest run |",
        "|---|---:|---:|---:|---:|",
    ]
    for step, (label, _, _) in STEPS.items():
        m = steps[step]
        lines.append(
            f"| {label} | {m['bytes']:,.0f} | {m['seconds']:.3f} | {m['mb_per_s']:,.0f} "
            f"| {m['mb_per_s_low']:,.0f} to {m['mb_per_s_high']:,.0f} |"
        )
    lines += ["", "| ratio of median MB/s | criu / reference |", "|---|---:|"]
    for criu_step, reference in RATIOS:
        ratio = steps[criu_step]["mb_per_s"] / steps[reference]["mb_per_s"]
        lines.append(f"| {STEPS[criu_step][0]} / {STEPS[reference][0]} | {ratio:.2f} |")
    return lines


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def share(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0%}"


def report(result: dict[str, Any]) -> str:
    """The markdown section: the setting, the two tables, and what they measure."""
    figures = [RunFigures(**run) for run in result["runs"]]
    host = result["machine"]
    image = min((f.image_cached for f in figures if f.image_cached is not None), default=None)
    pages = min((f.pages_cached for f in figures if f.pages_cached is not None), default=None)
    ready = statistics.median(f.ready_s for f in figures)
    lines = [
        "## Checkpoint throughput (CRIU against dd)",
        "",
        f"Run of {result['date']}; {host['cpus']} CPUs ({host['cpu']}), kernel "
        f"{host['kernel']}, criu {result['criu']}; 1-minute load average "
        f"{host['load_1min']:.2f} before the run and {result['load_1min_after']:.2f} after it. "
        f"Simulated engine with {result['weights'] / MIB:,.0f} MiB of weights in CPU memory, "
        f"awake (no sleep before the dump). Median of {plural(len(figures), 'run')} after "
        f"{plural(result['warmup'], 'discarded warm-up round')}; images and dd files in one "
        f"directory on the same {result['filesystem']} disk, with an untimed `sync` before each "
        "timed step. Page cache: warm for both sides (no drop_caches): "
        f"{share(image)} of the image was cached when the restore started, {share(pages)} of "
        "its pages file when it was read.",
        "",
        *tables(medians(figures)),
        "",
        "A dump freezes the engine and writes its memory (weights, KV cache, interpreter) "
        "without fsync: like dd without conv it mostly measures writing into the page cache; "
        "a timed `sync` after each adds the disk's write-back (MB = 10⁶ bytes). dd's "
        "conv=fdatasync has the same durability but writes back from dd itself, and can take "
        "longer than a `sync` of as many bytes: the two `then sync` rows are the durable pair.",
        "A restore preadv()s the pages file into new anonymous mappings, which the kernel "
        "faults in and zeroes page by page, then resumes the tree with its pids; dd copies "
        "into one reused 1 MiB buffer, so the read into new anonymous memory is the "
        f"like-for-like reference. The engine answered /health and a one-token probe {ready:.2f} s "
        "after criu exited (not in the tables).",
        "Limits: warm cache only (a cold restore is bounded by the disk's read speed); a "
        "CPU-only engine on a small VM shared with other sessions, so figures vary from run to "
        "run (see the range); a GPU engine adds cuda-checkpoint and device copies not measured.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=parse_size, default=None, help="default 1GiB")
    parser.add_argument("--quick", action="store_true", help="256MiB of weights")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="rounds run and thrown away")
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="parent of the files")  # noqa: S108
    parser.add_argument("--json", action="store_true", help="print the raw figures")
    args = parser.parse_args()
    weights = args.weights or parse_size("256MiB" if args.quick else "1GiB")
    parent = args.dir.resolve()
    filesystem = filesystem_of(parent)
    if filesystem in MEMORY_FILESYSTEMS:
        parser.error(f"--dir {parent} is on {filesystem}, not on a disk")
    # Restored engines are detached from criu: as a subreaper we inherit and reap them.
    set_child_subreaper()
    binary = criu_binary()
    result: dict[str, Any] = {
        "date": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        "machine": machine(),
        "criu": criu_version(binary),
        "weights": weights,
        "filesystem": filesystem,
        "warmup": max(0, args.warmup),
    }
    runs = max(1, args.runs)
    figures = benchmark(Criu(binary), parent, weights, runs=runs, warmup=result["warmup"])
    result["load_1min_after"] = os.getloadavg()[0]
    result["runs"] = [dataclasses.asdict(f) for f in figures]
    result["medians"] = medians(figures)
    print(json.dumps(result, indent=2) if args.json else report(result))


if __name__ == "__main__":
    main()
