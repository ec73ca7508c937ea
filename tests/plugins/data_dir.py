"""Point LLMUX_DATA_DIR at a fresh temporary directory for the test run.

Loaded with `-p` (see pyproject's addopts) so it runs before pytest-django imports the
settings: the SQLite file, engine logs and simulator ledger stay out of the checkout.
"""

import os
import shutil
import tempfile

import pytest

_created: str | None = None
if "LLMUX_DATA_DIR" not in os.environ:
    _created = tempfile.mkdtemp(prefix="llmux-test-data-")
    os.environ["LLMUX_DATA_DIR"] = _created


def pytest_unconfigure(config: pytest.Config) -> None:
    if _created is not None:
        shutil.rmtree(_created, ignore_errors=True)
