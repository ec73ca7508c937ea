"""Which process actions (CUDA suspend, CRIU) this host's worker can carry out."""

from __future__ import annotations

import importlib.util
from functools import cache

from django.conf import settings

from llmux_site.core.cuda_helper import HelperProcess
from llmux_site.core.lifecycle import ProcessActions
from llmux_site.core.process_actions import HostProcessActions


def _has_cuda_bindings() -> bool:
    try:
        return importlib.util.find_spec("cuda.bindings") is not None
    except ModuleNotFoundError:  # no `cuda` package at all
        return False


@cache
def process_actions() -> ProcessActions | None:
    """The worker's process actions; None where the host can do none of them.

    One helper process per worker process holds the CUDA driver (started on first use).
    Without process actions an eviction that needs one escalates to stop, recorded.
    """
    mode = settings.LLMUX_CUDA_SUSPEND
    binary = settings.LLMUX_CUDA_CHECKPOINT_BIN
    if mode == "off" or (mode == "auto" and not binary and not _has_cuda_bindings()):
        return None
    # CRIU checkpoints need the image store's records: not wired here yet.
    return HostProcessActions(suspend=HelperProcess(binary))
