"""The `ProcessActions` of a host: CUDA suspend through a helper, CRIU through an image store.

Each half is optional: a host without a CUDA driver or without CRIU lacks that half, and
an eviction that needs it escalates to stop (lifecycle), recorded with the reason.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol

from llmux_site.core.criu import Criu, CriuError, DumpResult, RestoreResult
from llmux_site.core.cuda_helper import SuspendHelper
from llmux_site.core.lifecycle import LifecycleError, ProcessActionUnavailable, engine_pids
from llmux_site.core.processes import EngineProcess
from llmux_site.core.switching import EngineTarget

__all__ = ["HostProcessActions", "ImageStore"]


class ImageStore(Protocol):
    """Where a model's CRIU images live and how each one ended (the image records)."""

    def new_image(self, target: EngineTarget) -> Path:
        """A directory for the next image of `target` (not created yet); recorded as writing."""

    def dumped(self, target: EngineTarget, images_dir: Path, result: DumpResult) -> None:
        """The image is complete: ready to restore."""

    def dump_failed(self, target: EngineTarget, images_dir: Path, error: str) -> None:
        """The dump failed: the image must never be restored."""

    def latest(self, target: EngineTarget) -> Path | None:
        """The newest ready image of `target`, if any."""

    def restored(self, target: EngineTarget, images_dir: Path, result: RestoreResult) -> None:
        """The image was restored (it stays, and may be restored again)."""

    def restore_failed(self, target: EngineTarget, images_dir: Path, error: str) -> None:
        """The restore failed: the image is kept, marked, and not tried again."""


class HostProcessActions:
    """`ProcessActions` with whichever of CUDA suspend and CRIU this host has."""

    def __init__(
        self,
        *,
        suspend: SuspendHelper | None = None,
        criu: Criu | None = None,
        images: ImageStore | None = None,
    ) -> None:
        self.suspend_helper = suspend
        self.criu = criu
        self.images = images

    async def suspend(self, target: EngineTarget, process: EngineProcess) -> None:
        helper = self._helper("cuda_suspend")
        await asyncio.to_thread(helper.call, "suspend", engine_pids(process))

    async def resume(self, target: EngineTarget, process: EngineProcess) -> None:
        helper = self._helper("resume (cuda_suspend)")
        await asyncio.to_thread(helper.call, "resume", engine_pids(process))

    async def checkpoint(self, target: EngineTarget, process: EngineProcess) -> None:
        criu, images = self._criu("checkpoint")
        images_dir = images.new_image(target)
        try:
            result = await asyncio.to_thread(criu.dump, process, images_dir)
        except CriuError as exc:
            images.dump_failed(target, images_dir, str(exc))
            raise
        images.dumped(target, images_dir, result)

    async def restore(self, target: EngineTarget) -> EngineProcess:
        criu, images = self._criu("restore")
        images_dir = images.latest(target)
        if images_dir is None:
            raise LifecycleError(f"{target.name} has no ready checkpoint image")
        try:
            result = await asyncio.to_thread(criu.restore, images_dir)
        except CriuError as exc:
            images.restore_failed(target, images_dir, str(exc))
            raise
        images.restored(target, images_dir, result)
        return result.process

    def _helper(self, action: str) -> SuspendHelper:
        if self.suspend_helper is None:
            raise ProcessActionUnavailable(f"{action}: no CUDA driver on this host")
        return self.suspend_helper

    def _criu(self, action: str) -> tuple[Criu, ImageStore]:
        if self.criu is None or self.images is None:
            raise ProcessActionUnavailable(f"{action}: CRIU is not set up on this host")
        return self.criu, self.images
