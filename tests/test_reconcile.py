"""The sweep's reconcile records dead engines, but never over a switch's newer write."""

from __future__ import annotations

import subprocess
import sys
from subprocess import PIPE

import pytest

from llmux_site.core import processes
from llmux_site.core.config import parse_config
from llmux_site.core.switching import EngineStatus
from models_app.models import EngineRuntime, ModelDefinition
from models_app.services import reconcile
from models_app.services.registry import apply_registry
from models_app.services.runtime import record_engine_status
from tests.plugins.engines import free_port

pytestmark = pytest.mark.django_db


def running_engine_that_exited() -> tuple[ModelDefinition, EngineRuntime]:
    """A model recorded running on a process that has exited since (as a stop leaves it)."""
    apply_registry(
        parse_config({"models": {"gamma": {"model_path": "sim/gamma", "port": free_port()}}})
    )
    model = ModelDefinition.objects.get(name="gamma")
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=PIPE)
    process = processes.attach(child.pid)
    assert process is not None
    child.communicate(b"")  # it exits, and is reaped
    record_engine_status(model, EngineStatus.RUNNING, process=process, evicted=None)
    return model, EngineRuntime.objects.select_related("model").get(model=model)


def test_an_engine_that_died_is_recorded_failed() -> None:
    model, runtime = running_engine_that_exited()

    report = reconcile.ReconcileReport()
    assert reconcile.check_runtime(runtime, report) is False

    assert report.died == ["gamma"]
    fresh = EngineRuntime.objects.get(model=model)
    assert (fresh.state, fresh.pid) == ("failed", None)
    assert fresh.last_error == f"engine process {runtime.pid} exited"


def test_a_stop_recorded_after_the_sweep_read_the_row_is_kept() -> None:
    # The sweep read the row (running), then a switch stopped the engine and recorded it
    # stopped, then the sweep found the process gone: the stop is the truth, not a death.
    model, read_by_the_sweep = running_engine_that_exited()
    record_engine_status(model, EngineStatus.STOPPED, process=None, evicted=None)

    report = reconcile.ReconcileReport()
    assert reconcile.check_runtime(read_by_the_sweep, report) is False

    assert report.died == []
    fresh = EngineRuntime.objects.get(model=model)
    assert (fresh.state, fresh.last_error, fresh.consecutive_failures) == ("stopped", "", 0)
    # The gateway, which found the engine unreachable, still treats it as gone (retries).
    assert reconcile.engine_unreachable("gamma") is True
