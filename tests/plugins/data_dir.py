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

# Tests keep sockets, images and data under /tmp (short socket paths, pytest's tmp_path):
# allowed there on top of the default roots. Subprocesses get it too (harness `env`s).
# The real-engine tests' vLLM and models live in their own cache (tests/plugins/real_vllm).
VLLM_ROOT = os.environ.get("LLMUX_VLLM_ENV") or os.path.expanduser("~/.cache/llmux")
TEST_PATH_ROOTS = ",".join(
    [os.environ["LLMUX_DATA_DIR"], "/models", "/var/lib/llmux", "/run/llmux", "/tmp", VLLM_ROOT]
)
os.environ.setdefault("LLMUX_PATH_ROOTS", TEST_PATH_ROOTS)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _created is not None:
        shutil.rmtree(_created, ignore_errors=True)
