"""GPU telemetry through Django's client: `/api/status/`, the overview's first render and
`/metrics`, with real processes behind them: one holds "GPU" memory through the simulator's
ledger writer and reports itself fully busy, one sleeps holding host RAM."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from llmux_site.core.gpu import GIB
from models_app.models import EngineRuntime, EngineState, ModelDefinition

pytestmark = pytest.mark.django_db

HOLDER = """
import sys, time
from pathlib import Path
from llmux_site.core.gpu_ledger import LedgerWriter
writer = LedgerWriter(Path(sys.argv[1]), model="alpha", gpu_ids=[0])
writer.update(3 * 1024**3)
writer.report_utilization(100)
print("ready", flush=True)
time.sleep(120)
"""
# A sleeping engine's stand-in: 64 MiB of host RAM, touched so that it is resident.
SLEEPER = """
import time
held = bytearray(64 * 1024 * 1024)
print("ready", flush=True)
time.sleep(120)
"""


def _start(code: str, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


@dataclass
class Engines:
    holder: subprocess.Popen[str]
    sleeper: subprocess.Popen[str]


def _model(name: str, port: int) -> ModelDefinition:
    return ModelDefinition.objects.create(
        name=name, model_path=f"sim/{name}", port=port, gpu_ids=[0]
    )


def _runtime(name: str, port: int, state: EngineState, pid: int) -> None:
    model = _model(name, port)
    EngineRuntime.objects.create(
        model=model, state=state, pid=pid, create_time=psutil.Process(pid).create_time()
    )


@pytest.fixture
def engines() -> Iterator[Engines]:
    """alpha runs on GPU 0 (3 GiB, busy), beta sleeps, gamma was never started."""
    ledger = Path(settings.LLMUX_DIRS["ledger"])
    holder = _start(HOLDER, str(ledger))
    sleeper = _start(SLEEPER)
    try:
        _runtime("alpha", 18001, EngineState.RUNNING, holder.pid)
        _runtime("beta", 18002, EngineState.SLEEPING, sleeper.pid)
        _model("gamma", 18003)
        yield Engines(holder, sleeper)
    finally:
        for process in (holder, sleeper):
            process.kill()
            process.wait()
        (ledger / f"{holder.pid}.json").unlink(missing_ok=True)  # no GPU 0 in later tests


def _viewer() -> Client:
    client = Client()
    client.force_login(User.objects.create_user("viewer", password="pw-viewer"))
    return client


def test_the_status_api_reports_each_gpus_telemetry_and_who_holds_it(engines: Engines) -> None:
    telemetry = _viewer().get("/api/status/").json()["telemetry"]

    assert telemetry["probe"] == "ledger"
    [gpu] = telemetry["gpus"]
    assert (gpu["id"], gpu["used"], gpu["total"], gpu["utilization"]) == (0, 3 * GIB, 80 * GIB, 100)
    assert gpu["temperature"] > 60 and 500 < gpu["power"] < gpu["power_limit"]
    assert gpu["models"] == [{"model": "alpha", "bytes": 3 * GIB}]
    assert gpu["other"] == 0
    assert gpu["history"]["utilization"][-1] == 100  # this snapshot's reading is kept
    [sleeping] = telemetry["sleeping"]
    assert (sleeping["model"], sleeping["state"]) == ("beta", "sleeping")
    assert sleeping["host_bytes"] >= 64 * 1024 * 1024


def test_the_overview_renders_the_gpu_panel_before_any_script_runs(engines: Engines) -> None:
    page = _viewer().get("/").content.decode()

    assert 'data-gpu="0"' in page
    assert '<dd data-gpu-field="utilization">100 %</dd>' in page
    assert '<li data-share="alpha">alpha 3.0\xa0GB</li>' in page
    assert 'data-sleeping="beta"' in page and 'data-sleeping="gamma"' not in page
    assert re.search(r"<script src=\"/static/llmux/gpus.js(\?v=\w+)?\"></script>", page)


def _samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for every sample of a Prometheus text exposition."""
    lines = [line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#")]
    return {series: float(value) for series, value in lines}


def test_metrics_carry_gpu_load_heat_power_and_who_holds_memory(engines: Engines) -> None:
    metrics = _samples(Client().get("/metrics").content.decode())  # loopback: no credentials

    assert metrics['llmux_gpu_utilization_ratio{gpu="0"}'] == 1.0
    assert metrics['llmux_gpu_power_limit_watts{gpu="0"}'] == 700.0
    assert metrics['llmux_gpu_power_watts{gpu="0"}'] > 500
    assert metrics['llmux_gpu_temperature_celsius{gpu="0"}'] > 60
    assert metrics['llmux_gpu_model_memory_bytes{gpu="0",model="alpha"}'] == 3 * GIB
    assert metrics['llmux_sleeping_host_memory_bytes{model="beta"}'] >= 64 * 1024 * 1024
