#!/usr/bin/env python3
"""CRIU checkpoints of a real vLLM (its CPU build) against a cold start of the same engine.

Runs `llmux serve` as the README configures it, with two real vLLM engines (the tiny local
models of scripts/install-vllm.sh, on Unix sockets) evicted by `retain+checkpoint` with
`keep_images`, and alternates requests with the openai client. From llmux's own records
(the swap history and the image rows) it reports, all from this one run: the cold start
(spawn to ready), the evict phase (a dump, or ending a restored engine that keeps its
image), the restore (bring-up) and readiness, the image sizes, and the ratios to the cold
start.

    .venv/bin/python scripts/bench_real_vllm.py [--switches 8]

Prints a markdown table. Needs scripts/install-vllm.sh and scripts/install-criu.sh (make
test runs both). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import free_port, machine

REPO = Path(__file__).resolve().parents[1]
CPU_ARGS = ["--enforce-eager", "--kv-cache-memory-bytes", "268435456", "--max-model-len", "512"]
CPU_ARGS += ["--dtype", "float32"]
QUESTION = [{"role": "user", "content": "tell me about the engines"}]


def installed(script: str) -> list[str]:
    done = subprocess.run([str(REPO / "scripts" / script)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{script} failed:\n{done.stderr}")
    return done.stdout.strip().splitlines()


def config(vllm: str, models: list[str], criu: str, work: Path) -> dict[str, Any]:
    entries = {
        f"tiny-{index}": {
            "model_path": path,
            "uds": str(work / f"{index}.sock"),
            "extra_args": CPU_ARGS,
            "env": {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"},
            "eviction": {"weights": "retain", "process": "checkpoint"},
            "startup_timeout_secs": 600,
        }
        for index, path in enumerate(models)
    }
    return {
        "vllm_command": vllm,
        "models": entries,
        "policy": {"min_active_secs": 0, "request_timeout_secs": 900},
        "checkpoint": {"criu_path": criu, "images_dir": str(work / "images"), "keep_images": True},
    }


def run(switches: int) -> dict[str, Any]:
    vllm, *models = installed("install-vllm.sh")
    criu = installed("install-criu.sh")[-1]
    with tempfile.TemporaryDirectory(prefix="llmux-", dir="/tmp") as tmp:
        work = Path(tmp)
        data, port = work / "data", free_port()
        (work / "llmux.json").write_text(json.dumps(config(vllm, models, criu, work)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
        env |= {
            "LLMUX_DATA_DIR": str(data),
            "LLMUX_PATH_ROOTS": f"{data},/tmp,{Path(vllm).parents[1]}",
        }
        argv = [sys.executable, "manage.py", "llmux", "serve", "--config", str(work / "llmux.json")]
        with open(work / "serve.log", "ab") as log:
            serve = subprocess.Popen(
                [*argv, "--port", str(port)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=900
            )
            _wait_up(client)
            for turn in range(switches):
                client.chat.completions.create(
                    model=f"tiny-{turn % 2}", messages=QUESTION, temperature=0, max_tokens=8
                )
            time.sleep(2)  # the last swap's settle
            return _figures(data / "llmux.sqlite3")
        finally:
            os.killpg(serve.pid, signal.SIGTERM)
            serve.wait(timeout=120)


def _wait_up(client: openai.OpenAI) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            client.models.list()
            return
        except openai.APIConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _figures(database: Path) -> dict[str, Any]:
    with sqlite3.connect(database) as db:
        swaps = db.execute(
            "SELECT bringup, evict_ms, bringup_ms, readiness_ms, outcome FROM "
            "models_app_swapevent ORDER BY id"
        ).fetchall()
        images = db.execute(
            "SELECT bytes, dump_ms, restore_ms, restored_count, reused_count "
            "FROM checkpoints_app_checkpointimage ORDER BY id"
        ).fetchall()
    colds = [s for s in swaps if s[0] == "cold_start"]
    restores = [s for s in swaps if s[0] == "restore"]
    dumps = [s[1] for s in swaps[1:3] if s[1]]  # the two evictions that dumped
    ended = [s[1] for s in swaps[3:] if s[1]]  # evictions that kept the image
    return {
        "swaps": len(swaps),
        "failed": sum(1 for s in swaps if s[4] != "succeeded"),
        "cold_start_s": statistics.median((s[2] + (s[3] or 0)) / 1000 for s in colds),
        "dump_evict_s": statistics.median(dumps) / 1000,
        "kept_evict_s": statistics.median(ended) / 1000 if ended else None,
        "restore_s": statistics.median(s[2] / 1000 for s in restores),
        "restore_ready_s": statistics.median((s[2] + (s[3] or 0)) / 1000 for s in restores),
        "criu_dump_s": statistics.median(i[1] / 1000 for i in images),
        "criu_restore_s": statistics.median(i[2] / 1000 for i in images if i[2]),
        "image_gb": [round(i[0] / 1e9, 2) for i in images],
        "restored": [i[3] for i in images],
        "reused": [i[4] for i in images],
        "restores": len(restores),
    }


def report(f: dict[str, Any]) -> str:
    cold = f["cold_start_s"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = [
        ("cold start, spawn to ready (median)", cold, 1.0),
        ("evict by dump (CRIU, whole phase)", f["dump_evict_s"], None),
        ("evict a restored engine, image kept", f["kept_evict_s"], None),
        ("restore (bring-up phase)", f["restore_s"], f["restore_s"] / cold),
        ("restore + readiness probe", f["restore_ready_s"], f["restore_ready_s"] / cold),
    ]
    lines = [
        f"Real vLLM (CPU build 0.32.0, tiny model, float32) behind `llmux serve`, "
        f"retain+checkpoint with keep_images, {f['swaps']} swaps ({f['failed']} failed, "
        f"{f['restores']} restores), {when}, {machine()}",
        "",
        "| step | seconds | / cold start |",
        "|---|---:|---:|",
    ]
    for name, seconds, ratio in rows:
        shown = "—" if seconds is None else f"{seconds:.2f}"
        lines.append(f"| {name} | {shown} | {'—' if ratio is None else f'{ratio:.3f}'} |")
    lines.append(
        f"\ncriu dump {f['criu_dump_s']:.2f} s and restore {f['criu_restore_s']:.2f} s "
        f"(medians of the image rows); images {f['image_gb']} GB, restored {f['restored']} "
        f"times, kept instead of a new dump {f['reused']} times."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switches", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = run(args.switches)
    if args.json:
        print(json.dumps(figures, indent=2))
    print(report(figures))


if __name__ == "__main__":
    main()
