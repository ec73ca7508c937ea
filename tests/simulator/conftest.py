"""Fixtures that start simulated engines as real processes and always kill their groups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.simulator.harness import SimLauncher, launch_sims


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimLauncher]:
    """`sim.start(*args, uds=False, …)` → a healthy SimEngine; every one is killed afterwards."""
    with launch_sims(tmp_path / "sim") as launcher:
        yield launcher
