"""Which process actions (CUDA suspend, CRIU) this host's worker can carry out."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

from django.conf import settings

from llmux_site.core.criu import Criu
from llmux_site.core.cuda_helper import HelperProcess, SocketHelper, SuspendHelper
from llmux_site.core.engine_owner import become_owner, under_owner
from llmux_site.core.lifecycle import ProcessActions
from llmux_site.core.process_actions import HostProcessActions
from llmux_site.core.processes import set_child_subreaper, start_reaper
from models_app import image_port
from models_app.models import RegistryConfig
from models_app.services.switch_ports import gpu_probe

log = logging.getLogger(__name__)


def _has_cuda_bindings() -> bool:
    try:
        return importlib.util.find_spec("cuda.bindings") is not None
    except ModuleNotFoundError:  # no `cuda` package at all
        return False


def _helper_binary(config: RegistryConfig) -> str | None:
    return settings.LLMUX_CUDA_CHECKPOINT_BIN or config.cuda_checkpoint_path or None


def _suspend_on(config: RegistryConfig) -> bool:
    mode = settings.LLMUX_CUDA_SUSPEND
    binary = _helper_binary(config)
    return not (mode == "off" or (mode == "auto" and not binary and not _has_cuda_bindings()))


def _suspend_helper(config: RegistryConfig) -> SuspendHelper | None:
    """The host's one CUDA helper (the engine owner's, on its socket) under `llmux worker`;
    elsewhere a helper of this process's own."""
    if not _suspend_on(config):
        return None
    if under_owner():
        return SocketHelper(str(helper_socket()))
    return HelperProcess(_helper_binary(config))


def helper_socket() -> Path:
    return Path(settings.LLMUX_DIRS["run"]) / "cuda-helper.sock"


def own_engines_here() -> subprocess.Popen[bytes] | None:
    """Make this process (`llmux worker`, before its cluster forks) the host's engine owner
    (llmux_site.core.engine_owner) and start the host's CUDA helper on its socket; the
    helper process, or None where CUDA suspend is off."""
    become_owner(Path(settings.LLMUX_DIRS["run"]) / "exits")
    config = RegistryConfig.load()
    if not _suspend_on(config):
        return None
    argv = [sys.executable, "-m", "llmux_site.core.cuda_helper", "--socket", str(helper_socket())]
    binary = _helper_binary(config)
    if binary:
        argv += ["--binary", binary]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL)


def _criu(config: RegistryConfig) -> Criu | None:
    if settings.LLMUX_CRIU == "off":
        return None
    binary = shutil.which(config.criu_path)
    if binary is None:
        log.info("CRIU checkpoints are off: %r is not an executable here", config.criu_path)
        return None
    return Criu(binary, plugin_dir=config.cuda_plugin_dir or None)


def capabilities() -> tuple[bool, bool]:
    """(CUDA suspend, CRIU checkpoint): what `process_actions` would give this host, without
    building them (no helper, no subreaper in a process that only asks)."""
    config = RegistryConfig.load()
    return _suspend_helper(config) is not None, _criu(config) is not None


@cache
def process_actions() -> ProcessActions | None:
    """The worker's process actions; None where the host can do none of them.

    One helper process per worker process holds the CUDA driver (started on first use).
    Without process actions an eviction that needs one escalates to stop, recorded.
    """
    config = RegistryConfig.load()
    helper = _suspend_helper(config)
    criu = _criu(config)
    if helper is None and criu is None:
        return None
    if criu is not None and not under_owner():
        # A restored engine is detached from criu and would be reparented to pid 1; as a
        # subreaper this process inherits it, so once it is dumped again (or stopped) it
        # can be reaped, and its pids are free for the next restore. Under `llmux worker`
        # the host's engine owner does this for every worker process, and a worker
        # process must not be a subreaper itself (it would take the engines from it).
        set_child_subreaper(True)
        start_reaper()
    return HostProcessActions(
        suspend=helper,
        criu=criu,
        images=image_port.store() if criu is not None else None,
        cuda_mode=settings.LLMUX_CRIU_CUDA,
        device_memory=lambda pids: gpu_probe().used_by_pids(pids),
    )
