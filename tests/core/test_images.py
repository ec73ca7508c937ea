"""Image descriptions, the disk budget and the CUDA checkpoint mode (pure core)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmux_site.core.criu import Criu, CriuError
from llmux_site.core.images import (
    CudaMode,
    DiskBudgetExceeded,
    ImageMeta,
    check_budget,
    choose_cuda_mode,
    cuda_plugin_installed,
    expected_image_bytes,
    is_image,
    nvidia_driver_version,
    read_meta,
)

GIB = 1024**3


@pytest.mark.parametrize(
    ("gpus", "driver", "plugin", "override", "mode"),
    [
        ((), "580.65.06", True, "auto", CudaMode.NONE),  # a CPU engine needs neither
        ((), None, False, "suspend", CudaMode.NONE),
        ((0,), "580.159.04", True, "auto", CudaMode.PLUGIN),
        ((0, 1), "590.1", True, "auto", CudaMode.PLUGIN),
        # Driver 580 without the plugin installed (Debian ships none): suspend first, which
        # is what was seen working on the GPU machine.
        ((0,), "580.159.04", False, "auto", CudaMode.SUSPEND),
        ((0,), "575.57.08", True, "auto", CudaMode.SUSPEND),
        ((0,), "570.86.15", False, "auto", CudaMode.SUSPEND),
        ((0,), None, True, "auto", CudaMode.SUSPEND),  # unknown driver: the way that works
        ((0,), "580.159.04", True, "suspend", CudaMode.SUSPEND),
        ((0,), "575.57.08", False, "plugin", CudaMode.PLUGIN),
    ],
)
def test_the_cuda_mode_follows_what_is_installed_unless_overridden(
    gpus: tuple[int, ...], driver: str | None, plugin: bool, override: str, mode: CudaMode
) -> None:
    assert choose_cuda_mode(bool(gpus), driver, override, plugin_installed=plugin) is mode


def test_the_plugin_is_installed_where_its_file_is(tmp_path: Path) -> None:
    assert not cuda_plugin_installed(None)
    assert not cuda_plugin_installed(str(tmp_path))
    (tmp_path / "cuda_plugin.so").write_bytes(b"")
    assert cuda_plugin_installed(str(tmp_path))


def test_an_unknown_override_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, plugin or suspend"):
        choose_cuda_mode(True, "580.1", "sometimes")


def test_the_driver_version_comes_from_the_kernel_module(tmp_path: Path) -> None:
    version = tmp_path / "version"
    version.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  "
        "(dvs-builder@U22)  Thu Oct  2 2025\nGCC version:  gcc version 12.2.0\n"
    )
    assert nvidia_driver_version(version) == "580.159.04"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  575.57.08  Sat May 24\n")
    assert nvidia_driver_version(version) == "575.57.08"
    assert nvidia_driver_version(tmp_path / "absent") is None


def test_the_budget_refuses_what_would_not_fit_and_says_where(tmp_path: Path) -> None:
    check_budget(GIB, directory=tmp_path, budget=10 * GIB, used=8 * GIB, reserve=0)
    with pytest.raises(DiskBudgetExceeded, match="the images budget has 1024 MiB left"):
        check_budget(2 * GIB, directory=tmp_path, budget=10 * GIB, used=9 * GIB, reserve=0)
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with pytest.raises(DiskBudgetExceeded, match="the disk has"):
        check_budget(free + GIB, directory=tmp_path, budget=None, used=0, reserve=0)
    # A directory not made yet is measured on the filesystem it will be made on.
    check_budget(GIB, directory=tmp_path / "not" / "yet", budget=None, used=0, reserve=0)


def test_the_expected_size_covers_resident_and_device_memory() -> None:
    mine = expected_image_bytes([os.getpid()])
    assert mine > 64 * 1024**2  # the margin alone
    assert expected_image_bytes([os.getpid()], device_bytes=GIB) >= mine + GIB
    assert expected_image_bytes([2**22 + 12345]) == 64 * 1024**2  # no such process


def test_an_image_describes_itself(tmp_path: Path) -> None:
    meta = ImageMeta(model="m", fingerprint="f" * 32, weights="discard", pid=7, pgid=7)
    assert read_meta(tmp_path) is None and not is_image(tmp_path)
    meta.write(tmp_path)
    assert read_meta(tmp_path) == meta and not is_image(tmp_path)  # no CRIU inventory
    (tmp_path / "inventory.img").write_bytes(b"x")
    assert is_image(tmp_path)
    (tmp_path / "llmux-image.json").write_text("{not json")
    assert read_meta(tmp_path) is None


def test_the_cuda_plugin_needs_its_directory() -> None:
    assert Criu("criu", plugin_dir="/usr/lib/criu")._plugin_args(True) == ["-L", "/usr/lib/criu"]
    assert Criu("criu")._plugin_args(False) == []
    with pytest.raises(CriuError, match="cuda_plugin_dir is not set"):
        Criu("criu")._plugin_args(True)
