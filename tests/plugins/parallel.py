"""How `make test TEST_WORKERS=2` splits the suite over two pytest-xdist workers.

Each test file is one unit of work, so a module-scoped fixture (a running llmux, a browser)
starts once, as in a serial run. The real-vLLM tests and the conformance suite are one unit
together: they spend their time in vLLM's single-threaded imports at each cold start
(ENGINE_CONTRACT §6), so one worker runs them end to end, one real engine pair at a time,
while the other runs everything else; they are handed out first, so their 20 minutes are
not the run's tail.

The units are made by a scheduler of our own (`pytest_xdist_make_scheduler`), not by
`xdist_group` marks: xdist 3.8 adds a mark's group to a test's node id by assigning
`item._nodeid`, which pytest 9 no longer reads (its node ids live in `_id`), so with
`--dist loadgroup` every test went its own way and files were split over both workers.

The Makefile gives a two-worker run a short base temporary directory: xdist adds
`popen-gwN/` to every test's tmp_path, and a data directory that deep leaves no room for
llmux's bus sockets under the 108 bytes a Unix socket path may have.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

REAL_ENGINE_GROUP = "real-vllm"
# Packages whose tests start real vLLM engines (package-scoped in conformance).
REAL_ENGINE_PACKAGES = ("tests/real_vllm/", "tests/conformance/")


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: the real-engine group, or its file."""
    path = nodeid.split("::", 1)[0]
    return REAL_ENGINE_GROUP if path.startswith(REAL_ENGINE_PACKAGES) else path


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):  # type: ignore[misc]
        """xdist's scope scheduling, with our units as the scopes."""

        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByWorkUnit(config, log)


@pytest.hookimpl(trylast=True)  # after pytest's own ordering by parametrized fixtures
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # In an xdist worker (every worker sorts alike, as xdist requires), the real-engine
    # group first: the Makefile passes --no-loadscope-reorder, so xdist hands the units
    # out in this order. A serial run keeps pytest's order.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: work_unit(item.nodeid) != REAL_ENGINE_GROUP)
