"""The `ProcessActions` of a host: CUDA suspend through a helper, CRIU through an image store.

Each half is optional: a host without a CUDA driver or without CRIU lacks that half, and
an eviction that needs it escalates to stop (lifecycle), recorded with the reason.

A checkpoint writes one fresh directory per image and describes it (`images.ImageMeta`)
once CRIU has finished; the store records each image's life (writing, ready, restored,
verified, failed). For an engine on GPUs the CUDA state goes into the image by CRIU's CUDA
plugin (where installed, driver >= 580) or by suspending CUDA first, as `images.choose_cuda_mode`
decides; the choice is kept in the image, and its restore does the matching thing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from llmux_site.core.criu import Criu, CriuError, DumpResult, RestoreResult, bytes_of
from llmux_site.core.cuda_helper import SuspendHelper
from llmux_site.core.engine_files import ensure_private_tmp
from llmux_site.core.images import (
    CudaMode,
    ImageMeta,
    choose_cuda_mode,
    cuda_plugin_installed,
    expected_image_bytes,
    fingerprint,
    nvidia_driver_version,
    read_meta,
)
from llmux_site.core.lifecycle import (
    EngineMemoryProbe,
    LifecycleError,
    ProcessActionUnavailable,
    Restored,
    engine_pids,
    kill_now,
)
from llmux_site.core.processes import EngineProcess
from llmux_site.core.switching import EngineTarget

__all__ = ["HostProcessActions", "ImageStore"]

RESTORED_STOP_GRACE = 5.0

T = TypeVar("T")


class ImageStore(Protocol):
    """Where a model's CRIU images live and how each one ended (the image records).

    Called from worker threads, never from the event loop (a store may block on a database).
    """

    def new_image(self, target: EngineTarget, expected_bytes: int) -> Path:
        """A directory for the next image of `target` (not created yet), recorded as
        writing. Raises `images.DiskBudgetExceeded` when `expected_bytes` would not fit."""

    def progress(self, images_dir: Path, done: int, total: int) -> None:
        """Bytes written (dump) or read (restore) so far, of about `total`."""

    def dumped(self, target: EngineTarget, images_dir: Path, result: DumpResult) -> None:
        """The image is complete and described: ready to restore."""

    def dump_failed(self, target: EngineTarget, images_dir: Path, error: str) -> None:
        """The dump failed: the image must never be restored."""

    def latest(self, target: EngineTarget) -> Path | None:
        """The image to restore `target` from: its newest ready image made from the same
        launch spec (or the model's checkpoint_path), if any."""

    def restoring(self, images_dir: Path) -> None:
        """A restore from the image starts: nothing may delete it until `restored` or
        `restore_failed` ends it."""

    def restored(self, target: EngineTarget, images_dir: Path, result: RestoreResult) -> None:
        """The image was restored (it stays, and may be restored again)."""

    def reusable(self, target: EngineTarget, process: EngineProcess) -> Path | None:
        """With keep_images: the ready image this very engine process was restored from.

        Evicting it again, the engine is stopped and the image kept as its checkpoint: as
        far as serving goes its state is the image's (what it served since changed caches
        and counters only), and a kill takes milliseconds where a dump takes seconds."""

    def reused(self, target: EngineTarget, images_dir: Path) -> None:
        """The engine was evicted to the image it came from (no new dump)."""

    def restore_failed(self, target: EngineTarget, images_dir: Path, error: str) -> None:
        """The restore failed: the image is kept, marked, and not tried again."""

    def verified(self, target: EngineTarget, images_dir: Path) -> None:
        """The engine restored from this image passed its readiness probe."""


class HostProcessActions:
    """`ProcessActions` with whichever of CUDA suspend and CRIU this host has."""

    def __init__(
        self,
        *,
        suspend: SuspendHelper | None = None,
        criu: Criu | None = None,
        images: ImageStore | None = None,
        cuda_mode: str = "auto",
        driver_version: str | None = None,
        device_memory: EngineMemoryProbe | None = None,
    ) -> None:
        self.suspend_helper = suspend
        self.criu = criu
        self.images = images
        self.cuda_mode = cuda_mode
        self.driver_version = driver_version if driver_version else nvidia_driver_version()
        self.device_memory = device_memory
        self._restored: dict[str, Path] = {}  # model → the image its engine came from

    # -- CUDA suspend ------------------------------------------------------------------

    async def suspend(self, target: EngineTarget, process: EngineProcess) -> None:
        await self._cuda("suspend", engine_pids(process))

    async def resume(self, target: EngineTarget, process: EngineProcess) -> None:
        await self._cuda("resume", engine_pids(process))

    async def _cuda(self, op: str, pids: Sequence[int]) -> None:
        if self.suspend_helper is None:
            raise ProcessActionUnavailable(f"cuda {op}: no CUDA driver on this host")
        await asyncio.to_thread(self.suspend_helper.call, op, list(pids))

    # -- CRIU ---------------------------------------------------------------------------

    async def checkpoint(self, target: EngineTarget, process: EngineProcess) -> None:
        criu, images = self._criu("checkpoint")
        kept = await asyncio.to_thread(images.reusable, target, process)
        if kept is not None:
            await asyncio.to_thread(criu.end_kept, process)
            await asyncio.to_thread(images.reused, target, kept)
            return
        pids = engine_pids(process)
        device = (self.device_memory(pids) or 0) if self.device_memory is not None else 0
        # An engine on GPUs: configured with gpu_ids, or ("all GPUs") holding device memory
        # on a host with an NVIDIA driver.
        on_gpu = bool(target.gpu_ids) or (self.driver_version is not None and device > 0)
        mode = choose_cuda_mode(
            on_gpu,
            self.driver_version,
            self.cuda_mode,
            plugin_installed=cuda_plugin_installed(criu.plugin_dir),
        )
        # The plugin copies device memory into the image; suspended first, it sits in host
        # memory, which the resident size does not count yet.
        expected = expected_image_bytes(pids, device if mode is not CudaMode.NONE else 0)
        images_dir = await asyncio.to_thread(images.new_image, target, expected)
        meta = ImageMeta(
            model=target.name,
            fingerprint=fingerprint(target),
            weights=target.eviction.weights.value,
            cuda_mode=mode.value,
            pid=process.pid,
            pgid=process.pgid,
            tool_version=criu.version,
            driver_version=self.driver_version or "",
        )
        await _to_the_end(
            self._dump(criu, images, target, process, images_dir, meta, mode, expected)
        )

    async def _dump(
        self,
        criu: Criu,
        images: ImageStore,
        target: EngineTarget,
        process: EngineProcess,
        images_dir: Path,
        meta: ImageMeta,
        mode: CudaMode,
        expected: int,
    ) -> None:
        pids = engine_pids(process)
        try:
            if mode is CudaMode.SUSPEND:
                await self._cuda("suspend", pids)
            result = await asyncio.to_thread(
                criu.dump,
                process,
                images_dir,
                cuda_plugin=mode is CudaMode.PLUGIN,
                progress=lambda done: images.progress(images_dir, done, expected),
            )
            meta.write(images_dir)  # last: a directory without it is no image
        except Exception as exc:
            await asyncio.to_thread(images.dump_failed, target, images_dir, str(exc))
            raise
        await asyncio.to_thread(images.dumped, target, images_dir, result)

    async def has_image(self, target: EngineTarget) -> bool:
        if self.criu is None or self.images is None:
            return False
        return await asyncio.to_thread(self.images.latest, target) is not None

    async def restore(self, target: EngineTarget) -> Restored:
        criu, images = self._criu("restore")
        images_dir = await asyncio.to_thread(images.latest, target)
        if images_dir is None:
            raise LifecycleError(f"{target.name} has no ready checkpoint image")
        restored = await _to_the_end(
            self._restore(criu, images, target, images_dir), undo=_stop_restored
        )
        self._restored[target.name] = images_dir
        return restored

    async def _restore(
        self, criu: Criu, images: ImageStore, target: EngineTarget, images_dir: Path
    ) -> Restored:
        meta = read_meta(images_dir)
        mode = CudaMode(meta.cuda_mode) if meta else CudaMode.NONE
        await asyncio.to_thread(images.restoring, images_dir)
        try:
            if meta is None:
                raise CriuError(f"{images_dir} has no readable llmux-image.json")
            if target.spec.tmp_dir is not None:  # a stop since the dump removed it
                ensure_private_tmp(target.spec.tmp_dir)
            total = (await asyncio.to_thread(bytes_of, images_dir)) or 1
            result = await asyncio.to_thread(
                criu.restore,
                images_dir,
                cuda_plugin=mode is CudaMode.PLUGIN,
                progress=lambda done: images.progress(images_dir, min(done, total), total),
            )
            if mode is CudaMode.SUSPEND:
                # The device state was suspended into host memory before the dump.
                await self._resume_restored(result.process)
        except Exception as exc:
            await asyncio.to_thread(images.restore_failed, target, images_dir, str(exc))
            raise
        await asyncio.to_thread(images.restored, target, images_dir, result)
        return Restored(result.process, meta.weights_action)

    async def _resume_restored(self, process: EngineProcess) -> None:
        """Resume CUDA in a restored engine; an engine that cannot resume is stopped (it
        was never reported, so nobody else would stop it)."""
        try:
            await self._cuda("resume", engine_pids(process))
        except BaseException:
            kill_now(process, RESTORED_STOP_GRACE)
            raise

    async def restore_verified(self, target: EngineTarget) -> None:
        images_dir = self._restored.pop(target.name, None)
        if images_dir is not None and self.images is not None:
            await asyncio.to_thread(self.images.verified, target, images_dir)

    def _criu(self, action: str) -> tuple[Criu, ImageStore]:
        if self.criu is None or self.images is None:
            raise ProcessActionUnavailable(f"{action}: CRIU is not set up on this host")
        return self.criu, self.images


async def _to_the_end(
    work: Coroutine[Any, Any, T], undo: Callable[[T], Awaitable[None]] | None = None
) -> T:
    """Run `work` to its end even when the caller is cancelled (a switch that lost its
    lease): criu cannot stop halfway, and an image left `writing` or an engine restored
    behind the caller's back would be recorded by nobody. On cancellation `undo` gets the
    result, then the cancellation goes on."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            result = await task
            if undo is not None:
                await undo(result)
        raise


async def _stop_restored(restored: Restored) -> None:
    """An engine restored for a caller that is gone: nobody will record it, so stop it."""
    await asyncio.to_thread(kill_now, restored.process, RESTORED_STOP_GRACE)
