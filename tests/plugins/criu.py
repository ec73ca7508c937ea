"""Real CRIU (scripts/install-criu.sh) for the tests that checkpoint engines."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from llmux_site.core.criu import Criu

REPO = Path(__file__).resolve().parents[2]


def install_criu() -> str:
    """The path of a working criu 4 (the script fails when CRIU cannot run here)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "install-criu.sh")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def criu() -> Criu:
    # Progress every 20 ms, so that even a quick dump reports some on the way.
    return Criu(install_criu(), progress_interval=0.02)
