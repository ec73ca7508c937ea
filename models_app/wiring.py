"""The worker's composition root: its process-wide pieces, built once, and what they make.

Everything a worker process holds once (the database thread its switches write through,
the GPU probe, its process actions) and every change to the process itself (subreaper,
the host's engine owner) is made here, so the services and adapters stay free of them.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

from django.conf import settings

from llmux_site.core.engine_owner import become_owner, under_owner
from llmux_site.core.gpu import GpuProbe, detect_probe
from llmux_site.core.lifecycle import ProcessActions
from llmux_site.core.process_actions import ImageStore
from llmux_site.core.processes import set_child_subreaper, start_reaper
from llmux_site.core.switching import SwitchPlan
from models_app import image_port
from models_app.adapters.switch_ports import DbSwitchPorts
from models_app.models import ModelDefinition, RegistryConfig, SwitchRequest
from models_app.services import host_actions


@cache
def switch_db() -> ThreadPoolExecutor:
    """The thread (and database connection) a worker's switches read and write through.

    One thread keeps a switch's writes in the order it issued them, and keeps its
    connection open between switches instead of connecting anew for each.
    """
    return ThreadPoolExecutor(1, "llmux-switch-db")


@cache
def gpu_probe() -> GpuProbe:
    """This process's GPU probe: NVML on a GPU host, the simulator's ledger without."""
    return detect_probe(settings.LLMUX_DIRS["ledger"])


def switch_ports(
    request: SwitchRequest,
    plan: SwitchPlan,
    *,
    models: list[ModelDefinition],
    drain_tokens: dict[str, int],
) -> DbSwitchPorts:
    """The database side of one switch, on the worker's switch thread and GPU probe."""
    return DbSwitchPorts(
        request=request,
        plan=plan,
        models=models,
        drain_tokens=drain_tokens,
        db=switch_db(),
        gpu_probe=gpu_probe,
    )


def image_store() -> ImageStore | None:
    """The worker's image store, through the port checkpoints_app registers (or none)."""
    return image_port.store()


@cache
def worker_process_actions() -> ProcessActions | None:
    """The worker's process actions (one CUDA helper per worker process, on first use);
    None where the host can do none of them."""
    actions = host_actions.process_actions_for(
        RegistryConfig.load(),
        images=image_store,
        device_memory=lambda pids: gpu_probe().used_by_pids(pids),
    )
    if actions is not None and actions.criu is not None and not under_owner():
        _reap_restored_engines()
    return actions


def _reap_restored_engines() -> None:
    """Make this process the subreaper of the engines it restores.

    A restored engine is detached from criu and would be reparented to pid 1; as a
    subreaper this process inherits it, so once it is dumped again (or stopped) it can be
    reaped, and its pids are free for the next restore. Under `llmux worker` the host's
    engine owner does this for every worker process, and a worker process must not be a
    subreaper itself (it would take the engines from it).
    """
    set_child_subreaper(True)
    start_reaper()


def own_engines_here() -> subprocess.Popen[bytes] | None:
    """Make this process (`llmux worker`, before its cluster forks) the host's engine owner
    (llmux_site.core.engine_owner) and start the host's CUDA helper on its socket; the
    helper process, or None where CUDA suspend is off."""
    become_owner(Path(settings.LLMUX_DIRS["run"]) / "exits")
    config = RegistryConfig.load()
    if not host_actions.suspend_on(config):
        return None
    socket = str(host_actions.helper_socket())
    argv = [sys.executable, "-m", "llmux_site.core.cuda_helper", "--socket", socket]
    binary = host_actions.helper_binary(config)
    if binary:
        argv += ["--binary", binary]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL)
