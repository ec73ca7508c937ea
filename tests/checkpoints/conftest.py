"""Real CRIU for the checkpoint tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmux_site.core.criu import Criu
from tests.core.switch_ports import SimModels

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def criu() -> Criu:
    """scripts/install-criu.sh's criu (it fails the test when CRIU cannot run here)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "install-criu.sh")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return Criu(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def sims(short_tmp_dir: Path) -> Iterator[SimModels]:
    """Simulated models under a short directory (their Unix socket paths stay < 108 bytes)."""
    models = SimModels(short_tmp_dir / "sim")
    yield models
    models.close()
