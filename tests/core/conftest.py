"""Fixtures of the core's lifecycle and switcher tests: simulated engines and ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.switch_ports import InMemoryPorts, SimModels


@pytest.fixture
def models(tmp_path: Path) -> Iterator[SimModels]:
    sims = SimModels(tmp_path / "sim")
    yield sims
    sims.close()


@pytest.fixture
def ports(models: SimModels) -> InMemoryPorts:
    return models.ports()
