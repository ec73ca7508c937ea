"""Checkpoint tests: real CRIU (the `criu` fixture of tests/plugins/criu.py), real engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmux_site.core import processes
from models_app.models import RegistryConfig
from tests.core.switch_ports import SimModels


@pytest.fixture(autouse=True)
def subreaper() -> Iterator[None]:
    """As in the worker: restored engines are detached from criu, and reparented to us, so
    a dumped restored engine can be reaped and its pids are free for the next restore."""
    processes.set_child_subreaper(True)
    yield
    processes.set_child_subreaper(False)


@pytest.fixture
def sims(short_tmp_dir: Path) -> Iterator[SimModels]:
    """Simulated models under a short directory (their Unix socket paths stay < 108 bytes)."""
    models = SimModels(short_tmp_dir / "sim")
    yield models
    models.close()


@pytest.fixture
def images_root(short_tmp_dir: Path) -> Path:
    """The registry's images directory, set to a short path of this test's own."""
    root = short_tmp_dir / "images"
    RegistryConfig.objects.update_or_create(pk=1, defaults={"images_dir": str(root)})
    return root
