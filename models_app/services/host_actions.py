"""Which process actions (CUDA suspend, CRIU) this host's worker can carry out.

Pure choices from the settings and the registry: nothing here starts a process or
changes this one. models_app/wiring.py builds the worker's one set of process actions
from them and makes the process-wide changes a worker needs (subreaper, engine owner).
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from llmux_site.core.criu import Criu
from llmux_site.core.cuda_helper import HelperProcess, SocketHelper, SuspendHelper
from llmux_site.core.engine_owner import under_owner
from llmux_site.core.lifecycle import EngineMemoryProbe
from llmux_site.core.process_actions import HostProcessActions, ImageStore
from models_app.models import RegistryConfig

log = logging.getLogger(__name__)


def _has_cuda_bindings() -> bool:
    try:
        return importlib.util.find_spec("cuda.bindings") is not None
    except ModuleNotFoundError:  # no `cuda` package at all
        return False


def helper_binary(config: RegistryConfig) -> str | None:
    """The cuda-checkpoint binary to use, if one is named (the settings win)."""
    return settings.LLMUX_CUDA_CHECKPOINT_BIN or config.cuda_checkpoint_path or None


def suspend_on(config: RegistryConfig) -> bool:
    """Whether CUDA suspend is on for this host (asked for, or a driver binding is here)."""
    mode = settings.LLMUX_CUDA_SUSPEND
    binary = helper_binary(config)
    return not (mode == "off" or (mode == "auto" and not binary and not _has_cuda_bindings()))


def _suspend_helper(config: RegistryConfig) -> SuspendHelper | None:
    """The host's one CUDA helper (the engine owner's, on its socket) under `llmux worker`;
    elsewhere a helper of this process's own (started on first use)."""
    if not suspend_on(config):
        return None
    if under_owner():
        return SocketHelper(str(helper_socket()))
    return HelperProcess(helper_binary(config))


def helper_socket() -> Path:
    return Path(settings.LLMUX_DIRS["run"]) / "cuda-helper.sock"


def _criu(config: RegistryConfig) -> Criu | None:
    if settings.LLMUX_CRIU == "off":
        return None
    binary = shutil.which(config.criu_path)
    if binary is None:
        log.info("CRIU checkpoints are off: %r is not an executable here", config.criu_path)
        return None
    return Criu(binary, plugin_dir=config.cuda_plugin_dir or None)


_CAPABILITIES_TTL = 30.0  # seconds: a status page asks every second; a host changes rarely
_capabilities: tuple[float, tuple[bool, bool]] | None = None


def capabilities_cached() -> tuple[bool, bool]:
    """`capabilities()`, read again at most every _CAPABILITIES_TTL seconds (the status
    snapshot asks each second; looking for CUDA bindings and CRIU each time cost ~20 ms)."""
    global _capabilities
    now = time.monotonic()
    if _capabilities is None or now - _capabilities[0] > _CAPABILITIES_TTL:
        _capabilities = (now, capabilities())
    return _capabilities[1]


def capabilities() -> tuple[bool, bool]:
    """(CUDA suspend, CRIU checkpoint): what `process_actions_for` would give this host,
    without building them (no helper, no subreaper in a process that only asks)."""
    config = RegistryConfig.current()
    return _suspend_helper(config) is not None, _criu(config) is not None


def process_actions_for(
    config: RegistryConfig,
    *,
    images: Callable[[], ImageStore | None],
    device_memory: EngineMemoryProbe,
) -> HostProcessActions | None:
    """This host's process actions under `config`; None where it can do none of them.

    `images` is asked only where CRIU is on. Without process actions an eviction that
    needs one escalates to stop, recorded.
    """
    helper = _suspend_helper(config)
    criu = _criu(config)
    if helper is None and criu is None:
        return None
    return HostProcessActions(
        suspend=helper,
        criu=criu,
        images=images() if criu is not None else None,
        cuda_mode=settings.LLMUX_CRIU_CUDA,
        device_memory=device_memory,
    )
