"""Point LLMUX_DATA_DIR at a fresh temporary directory for the test run.

Loaded with `-p` (see pyproject's addopts) so it runs before pytest-django imports the
settings: the SQLite file, engine logs and simulator ledger stay out of the checkout.
"""

import os
import shutil
import tempfile

import pytest

_created: str | None = None
# Under pytest-xdist each worker gets a directory of its own: a worker inherits the
# controller's environment, and two workers sharing one data directory would share its
# SQLite files and its bus sockets, and hear each other's notices.
OWNER_VARIABLE = "LLMUX_TEST_DATA_DIR_OWNER"
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if "LLMUX_DATA_DIR" not in os.environ or (_worker and os.environ.get(OWNER_VARIABLE) != _worker):
    _created = tempfile.mkdtemp(
        prefix=f"llmux-test-data-{_worker}-" if _worker else "llmux-test-data-"
    )
    os.environ["LLMUX_DATA_DIR"] = _created
    os.environ[OWNER_VARIABLE] = _worker

# Tests keep sockets, images and data under /tmp (short socket paths, pytest's tmp_path):
# allowed there on top of the default roots. Subprocesses get it too (harness `env`s).
# The real-engine tests' vLLM and models live in their own cache (tests/plugins/real_vllm).
VLLM_ROOT = os.environ.get("LLMUX_VLLM_ENV") or os.path.expanduser("~/.cache/llmux")
TEST_PATH_ROOTS = ",".join(
    [os.environ["LLMUX_DATA_DIR"], "/models", "/var/lib/llmux", "/run/llmux", "/tmp", VLLM_ROOT]
)
if _created is not None:
    os.environ["LLMUX_PATH_ROOTS"] = TEST_PATH_ROOTS  # this directory's, not the controller's
else:
    os.environ.setdefault("LLMUX_PATH_ROOTS", TEST_PATH_ROOTS)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _created is not None:
        shutil.rmtree(_created, ignore_errors=True)
