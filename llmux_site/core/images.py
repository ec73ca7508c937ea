"""What a checkpoint image is, whether it fits, and how CUDA state goes into it. Pure core.

An image directory is self-describing: next to CRIU's files it holds `llmux-image.json`
(the model, the launch fingerprint, how the weights were evicted before the dump, how CUDA
state was handled, the tool and driver versions). That is what lets a model's
`checkpoint_path` name an image made elsewhere (`llmux_checkpoint`, another host with the
same paths), and what lets an image outlive llmux's database.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from llmux_site.core.eviction_policy import WeightsAction
from llmux_site.core.lifecycle import ProcessActionUnavailable
from llmux_site.core.processes import UNREADABLE
from llmux_site.core.switching import EngineTarget

__all__ = [
    "META_FILE",
    "CudaMode",
    "DiskBudgetExceeded",
    "ImageMeta",
    "check_budget",
    "choose_cuda_mode",
    "cuda_plugin_installed",
    "expected_image_bytes",
    "fingerprint",
    "is_image",
    "nvidia_driver_version",
    "read_meta",
]

META_FILE = "llmux-image.json"
INVENTORY = "inventory.img"  # CRIU writes it last among the files every image has
# What an image needs beyond the engine's resident memory: CRIU's own metadata, page
# alignment, files kept by --link-remap. Measured images of the simulator stay within
# a few MiB of its RSS; the margin is generous so a dump never fills the disk.
MARGIN_RATIO = 0.10
MARGIN_BYTES = 64 * 1024 * 1024
NVIDIA_VERSION_FILE = Path("/proc/driver/nvidia/version")
# CRIU's CUDA plugin checkpoints device memory itself from this driver branch on.
PLUGIN_MIN_DRIVER = 580
CUDA_PLUGIN_FILE = "cuda_plugin.so"


class CudaMode(enum.StrEnum):
    """How an engine's GPU state gets into a CRIU image."""

    NONE = "none"  # a CPU engine: nothing to do
    PLUGIN = "plugin"  # CRIU's CUDA plugin (`-L plugin dir`) checkpoints it (driver >= 580)
    SUSPEND = "suspend"  # llmux suspends CUDA first, and resumes after restore (570-579)


class DiskBudgetExceeded(ProcessActionUnavailable):
    """The image would not fit: the eviction is downgraded to stop (lifecycle escalates)."""


@dataclass(frozen=True, slots=True)
class ImageMeta:
    """What llmux knows about an image, kept in the image directory itself."""

    model: str
    fingerprint: str  # of the launch spec; an image is reused only by the same spec
    weights: str  # WeightsAction applied before the dump: what bring-up must undo
    cuda_mode: str = CudaMode.NONE.value
    pid: int = 0
    pgid: int = 0
    tool_version: str = ""
    driver_version: str = ""

    @property
    def weights_action(self) -> WeightsAction:
        return WeightsAction(self.weights)

    def write(self, images_dir: Path) -> None:
        path = images_dir / META_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        tmp.replace(path)  # a reader never sees half of it


def read_meta(images_dir: Path) -> ImageMeta | None:
    """The image's own description; None when missing or unreadable."""
    try:
        data = json.loads((images_dir / META_FILE).read_text())
        return ImageMeta(**{k: data[k] for k in ImageMeta.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def is_image(images_dir: Path) -> bool:
    """A finished CRIU image with llmux's description (not proof it restores)."""
    return (images_dir / INVENTORY).is_file() and read_meta(images_dir) is not None


def fingerprint(target: EngineTarget) -> str:
    """The launch spec an image was made from: argv, environment, address."""
    spec = target.spec
    document = {
        "argv": list(spec.argv),
        "env": sorted(spec.env.items()),
        "address": str(target.address),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:32]


def expected_image_bytes(pids: Iterable[int], device_bytes: int = 0) -> int:
    """What a dump of these processes may write: resident memory (plus device memory the
    CUDA plugin would copy), with a margin."""
    resident = 0
    for pid in pids:
        try:
            resident += psutil.Process(pid).memory_info().rss
        except UNREADABLE:
            continue
    payload = resident + max(device_bytes, 0)
    return int(payload * (1 + MARGIN_RATIO)) + MARGIN_BYTES


def check_budget(
    expected: int, *, directory: Path, budget: int | None, used: int, reserve: int
) -> None:
    """Raise DiskBudgetExceeded unless `expected` bytes fit both the images budget (what
    images already use counted) and the filesystem (keeping `reserve` free)."""
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free - reserve
    room = free if budget is None else min(free, budget - used)
    if expected > room:
        where = "the disk" if budget is None or free <= budget - used else "the images budget"
        raise DiskBudgetExceeded(
            f"checkpoint needs about {_size(expected)} but {where} has {_size(max(room, 0))} "
            f"left (images use {_size(used)}"
            + (f" of {_size(budget)}" if budget is not None else "")
            + "); evicting by stop instead"
        )


def _size(n: int) -> str:
    return f"{n / 1024**2:.0f} MiB" if n < 10 * 1024**3 else f"{n / 1024**3:.1f} GiB"


def nvidia_driver_version(path: Path = NVIDIA_VERSION_FILE) -> str | None:
    """The loaded NVIDIA kernel module's version (e.g. "580.159.04"); None without one."""
    try:
        text = path.read_text()
    except OSError:
        return None
    found = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return found.group(1) if found else None


def choose_cuda_mode(
    on_gpu: bool, driver: str | None, override: str, *, plugin_installed: bool = False
) -> CudaMode:
    """How CUDA state goes into an image: by what is installed, unless overridden.

    CRIU's CUDA plugin suspends and restores the device state itself, but only where it is
    installed (Debian ships none; `checkpoint.cuda_plugin_dir`) and the driver is 580 or
    newer. Anywhere else llmux suspends CUDA (its own helper, driver 570 and newer) before
    the dump and resumes it after the restore: seen working on driver 580 too. A CPU
    engine needs neither.
    """
    if not on_gpu:
        return CudaMode.NONE
    if override in (CudaMode.PLUGIN, CudaMode.SUSPEND):
        return CudaMode(override)
    if override != "auto":
        raise ValueError(f"LLMUX_CRIU_CUDA must be auto, plugin or suspend, not {override!r}")
    major = int(driver.split(".")[0]) if driver and driver.split(".")[0].isdigit() else 0
    if plugin_installed and major >= PLUGIN_MIN_DRIVER:
        return CudaMode.PLUGIN
    return CudaMode.SUSPEND


def cuda_plugin_installed(plugin_dir: str | None) -> bool:
    """Whether CRIU's CUDA plugin is in `plugin_dir` (its file name, as CRIU builds it)."""
    return bool(plugin_dir) and Path(str(plugin_dir), CUDA_PLUGIN_FILE).is_file()
