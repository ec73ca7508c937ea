"""A MemoryBackend on a real GPU (`--device cuda`): weights and KV cache as torch uint8 tensors.

torch is imported here only, when an engine asks for the cuda device; it is typed as Any so the
module stays type-clean where torch is not installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from llmux_site.simulator.weights import WeightsLocation, WeightsSource

# Chunk the checksum so it never needs more than a few hundred MiB of scratch on the GPU.
CHECKSUM_CHUNK_WORDS = 32 * 1024 * 1024
MASK_63 = (1 << 63) - 1


def import_torch() -> Any:
    """torch, or a clear error when this machine has none."""
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise RuntimeError("--device cuda needs torch installed") from exc


class CudaMemory:
    """Weights and KV cache on `cuda:0` of this process; level-1 sleep offloads to pinned host."""

    def __init__(self, weights_bytes: int) -> None:
        self._torch = import_torch()
        if not self._torch.cuda.is_available():
            raise RuntimeError("--device cuda: torch sees no CUDA device")
        self._dev = self._torch.device("cuda", 0)
        self._size = weights_bytes
        self._device: Any = None
        self._host: Any = None
        self._kv: Any = None
        self._location = WeightsLocation.DROPPED

    @property
    def location(self) -> WeightsLocation:
        return self._location

    @property
    def weights_bytes(self) -> int:
        return self._size

    @property
    def device_bytes(self) -> int:
        return (self._size if self._device is not None else 0) + self.kv_bytes

    @property
    def host_bytes(self) -> int:
        return self._size if self._host is not None else 0

    @property
    def kv_bytes(self) -> int:
        return int(self._kv.numel()) if self._kv is not None else 0

    def _empty(self, nbytes: int, *, pinned: bool = False) -> Any:
        torch = self._torch
        if pinned:
            return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        return torch.empty(nbytes, dtype=torch.uint8, device=self._dev)

    def _sync(self) -> None:
        self._torch.cuda.synchronize(self._dev)

    def _release_pinned(self) -> None:
        """Give pinned host blocks no tensor holds back to the OS.

        torch caches freed pinned blocks for reuse; the 8 GiB staging buffer of a load
        stayed in the process after it, so a GPU-machine run (docs/PERFORMANCE.md) found
        a discard+checkpoint image as large as an offload one. A real engine holds no
        host copy of dropped weights, and neither does the simulator now.
        """
        empty = getattr(self._torch._C, "_host_emptyCache", None)
        if empty is not None:
            empty()

    def load_weights(self, source: WeightsSource) -> None:
        staging = self._empty(self._size, pinned=True)
        source.read_into(memoryview(staging.numpy()))
        if self._device is None:
            self._device = self._empty(self._size)
        self._device.copy_(staging, non_blocking=True)
        self._sync()
        del staging
        self._host = None
        self._release_pinned()
        self._location = WeightsLocation.DEVICE

    def offload_weights(self) -> None:
        if self._device is None:
            return
        host = self._empty(self._size, pinned=True)
        host.copy_(self._device, non_blocking=True)
        self._sync()
        self._host, self._device = host, None
        self._torch.cuda.empty_cache()
        self._location = WeightsLocation.HOST

    def restore_weights(self) -> None:
        if self._host is None:
            return
        device = self._empty(self._size)
        device.copy_(self._host, non_blocking=True)
        self._sync()
        self._device, self._host = device, None
        self._release_pinned()
        self._location = WeightsLocation.DEVICE

    def discard_weights(self) -> None:
        self._device = None
        self._host = None
        self._torch.cuda.empty_cache()
        self._release_pinned()
        self._location = WeightsLocation.DROPPED

    def allocate_garbage_weights(self) -> None:
        self._device = self._torch.zeros(self._size, dtype=self._torch.uint8, device=self._dev)
        self._host = None
        self._location = WeightsLocation.GARBAGE

    def corrupt_weights(self) -> None:
        live = self._device if self._device is not None else self._host
        if live is None:
            return
        step = max(1, self._size // 7)
        live[::step] ^= 0xA5
        self._sync()

    def weights_checksum(self) -> str | None:
        live = self._device if self._device is not None else self._host
        return None if live is None else self._checksum(live)

    def _checksum(self, data: Any) -> str:
        # Position-weighted sum over int64 words: integer sums are exact and order-independent,
        # so the result is deterministic on the GPU, and any changed or moved word changes it.
        torch = self._torch
        words = self._size // 8
        total = 0
        for start in range(0, words, CHECKSUM_CHUNK_WORDS):
            stop = min(words, start + CHECKSUM_CHUNK_WORDS)
            chunk = data[start * 8 : stop * 8].view(torch.int64)
            weights = torch.arange(start + 1, stop + 1, dtype=torch.int64, device=data.device)
            total = (total + int((chunk * weights).sum().item())) & MASK_63
        tail = data[words * 8 :].to(torch.int64)
        if tail.numel():
            positions = torch.arange(1, tail.numel() + 1, dtype=torch.int64, device=data.device)
            total = (total + int((tail * positions).sum().item()) * 31) & MASK_63
        return f"{total:016x}-{self._size:x}"

    def sample_weights(self, offsets: Sequence[int]) -> bytes:
        if self._device is None:
            return bytes(len(offsets))
        torch = self._torch
        index = torch.tensor([o % self._size for o in offsets], dtype=torch.int64, device=self._dev)
        return bytes(self._device[index].cpu().tolist())

    def allocate_kv(self, nbytes: int) -> None:
        if self._kv is not None or nbytes <= 0:
            return
        self._kv = self._torch.ones(nbytes, dtype=self._torch.uint8, device=self._dev)

    def free_kv(self) -> None:
        self._kv = None
        self._torch.cuda.empty_cache()
