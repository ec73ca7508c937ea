"""Simulated weights and KV cache: the weights file on disk and the memory backends that hold them.

A backend owns the "GPU" memory of one engine: the weights buffer (on the device, offloaded to
host memory, dropped, or a zero-filled "garbage" buffer after a level-2 wake without reload) and
the KV cache. `CpuMemory` keeps everything in bytearrays; `weights_cuda.CudaMemory` in torch
tensors on a real GPU.
"""

from __future__ import annotations

import enum
import hashlib
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

PAGE = 4096
CHUNK = 4 * 1024 * 1024
GENERATOR_VERSION = "llmux-sim-weights-v1"


class WeightsLocation(enum.StrEnum):
    """Where an engine's weights are right now."""

    DEVICE = "device"
    HOST = "host"
    DROPPED = "dropped"
    GARBAGE = "garbage"


@dataclass(frozen=True, slots=True)
class WeightsSource:
    """The weights file and the rate at which it may be read (0 = as fast as the disk goes)."""

    path: Path
    size: int
    load_bytes_per_sec: int = 0

    def read_into(self, target: memoryview) -> None:
        """Fill `target` from the file in chunks, sleeping as needed to respect the load rate."""
        chunk = CHUNK
        if self.load_bytes_per_sec:
            # Small chunks keep a throttled load smooth instead of bursty.
            chunk = max(PAGE, min(CHUNK, self.load_bytes_per_sec // 20))
        started = time.monotonic()
        done = 0
        with self.path.open("rb", buffering=0) as handle:
            while done < self.size:
                got = handle.readinto(target[done : done + chunk])
                if not got:
                    raise OSError(f"weights file {self.path} is shorter than {self.size} bytes")
                done += got
                if self.load_bytes_per_sec:
                    ahead = done / self.load_bytes_per_sec - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)


def generated_weights_path(cache_dir: Path, *, seed: int, size: int) -> Path:
    """The cache file holding the weights generated from (seed, size)."""
    digest = hashlib.sha256(f"{GENERATOR_VERSION}:{seed}:{size}".encode()).hexdigest()[:32]
    return cache_dir / f"{digest}.weights"


def ensure_generated_weights(path: Path, *, seed: int, size: int) -> Path:
    """Write the seed's weights to `path` once, atomically (tmp + rename), unless already there."""
    if path.is_file() and path.stat().st_size == size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)  # noqa: S311 - reproducible filler bytes, not a secret
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            remaining = size
            while remaining:
                step = min(CHUNK, remaining)
                handle.write(rng.randbytes(step))
                remaining -= step
        # Concurrent engines may race here; each renames a complete file, so any winner is fine.
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def bytes_checksum(data: bytes | bytearray | memoryview) -> str:
    """The checksum of a host buffer (blake2b, 16-byte digest)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class MemoryBackend(Protocol):
    """The simulated GPU memory of one engine: weights plus KV cache."""

    @property
    def location(self) -> WeightsLocation: ...
    @property
    def weights_bytes(self) -> int: ...
    @property
    def device_bytes(self) -> int: ...
    @property
    def host_bytes(self) -> int: ...
    @property
    def kv_bytes(self) -> int: ...

    def load_weights(self, source: WeightsSource) -> None:
        """Read the weights file into a device buffer (allocating one when none is there)."""

    def offload_weights(self) -> None:
        """Copy the device weights to a separate host buffer and free the device one."""

    def restore_weights(self) -> None:
        """Copy offloaded weights back to a new device buffer and free the host one."""

    def discard_weights(self) -> None:
        """Drop the weights wherever they are."""

    def allocate_garbage_weights(self) -> None:
        """Allocate a zero-filled device buffer, as a level-2 wake does before reload."""

    def corrupt_weights(self) -> None:
        """Silently flip a few bytes of the live weights."""

    def weights_checksum(self) -> str | None:
        """Checksum of the live weights (device or host), None when dropped."""

    def sample_weights(self, offsets: Sequence[int]) -> bytes:
        """The live weight bytes at `offsets` (modulo the size); zeros when dropped."""

    def allocate_kv(self, nbytes: int) -> None:
        """Allocate and touch the KV cache unless it is already allocated."""

    def free_kv(self) -> None:
        """Free the KV cache."""


class CpuMemory:
    """A MemoryBackend in process memory: the "GPU" is a bytearray, so is the host copy."""

    def __init__(self, weights_bytes: int) -> None:
        self._size = weights_bytes
        self._device: bytearray | None = None
        self._host: bytearray | None = None
        self._kv: bytearray | None = None
        self._location = WeightsLocation.DROPPED

    @property
    def location(self) -> WeightsLocation:
        return self._location

    @property
    def weights_bytes(self) -> int:
        return self._size

    @property
    def device_bytes(self) -> int:
        return (len(self._device) if self._device is not None else 0) + self.kv_bytes

    @property
    def host_bytes(self) -> int:
        return len(self._host) if self._host is not None else 0

    @property
    def kv_bytes(self) -> int:
        return len(self._kv) if self._kv is not None else 0

    def load_weights(self, source: WeightsSource) -> None:
        if self._device is None:
            self._device = bytearray(self._size)
        source.read_into(memoryview(self._device))
        self._host = None
        self._location = WeightsLocation.DEVICE

    def offload_weights(self) -> None:
        if self._device is None:
            return
        self._host = bytearray(self._device)
        self._device = None
        self._location = WeightsLocation.HOST

    def restore_weights(self) -> None:
        if self._host is None:
            return
        self._device = bytearray(self._host)
        self._host = None
        self._location = WeightsLocation.DEVICE

    def discard_weights(self) -> None:
        self._device = None
        self._host = None
        self._location = WeightsLocation.DROPPED

    def allocate_garbage_weights(self) -> None:
        self._device = bytearray(self._size)
        self._host = None
        self._location = WeightsLocation.GARBAGE

    def corrupt_weights(self) -> None:
        live = self._device if self._device is not None else self._host
        if live is None:
            return
        for offset in range(0, len(live), max(1, len(live) // 7)):
            live[offset] ^= 0xA5

    def weights_checksum(self) -> str | None:
        live = self._device if self._device is not None else self._host
        return None if live is None else bytes_checksum(live)

    def sample_weights(self, offsets: Sequence[int]) -> bytes:
        live = self._device
        if live is None:
            return bytes(len(offsets))
        return bytes(live[offset % len(live)] for offset in offsets)

    def allocate_kv(self, nbytes: int) -> None:
        if self._kv is not None or nbytes <= 0:
            return
        kv = bytearray(nbytes)
        # bytearray() maps zero pages lazily; writing one byte per page makes the memory real.
        kv[::PAGE] = b"\x01" * len(range(0, nbytes, PAGE))
        self._kv = kv

    def free_kv(self) -> None:
        self._kv = None


def resolve_weights_source(
    *,
    model_path: str,
    weights_file: Path | None,
    cache_dir: Path,
    seed: int,
    size: int,
    load_bytes_per_sec: int,
) -> WeightsSource:
    """The weights file to load: --sim-weights-file, else MODEL_PATH if it is a regular file,
    else bytes generated from the seed and cached under `cache_dir`."""
    if weights_file is not None:
        path = weights_file if weights_file.is_file() else None
        if path is None:
            path = ensure_generated_weights(weights_file, seed=seed, size=size)
    elif Path(model_path).is_file():
        path = Path(model_path)
    else:
        target = generated_weights_path(cache_dir, seed=seed, size=size)
        path = ensure_generated_weights(target, seed=seed, size=size)
    actual = path.stat().st_size
    if actual == 0:
        raise ValueError(f"weights file {path} is empty")
    return WeightsSource(path=path, size=actual, load_bytes_per_sec=load_bytes_per_sec)
