"""How `make test` splits the suite over two pytest-xdist workers (`-n 2 --dist loadgroup`).

Each test file is one unit of work, so a module-scoped fixture (a running llmux, a browser)
starts once, as it does in a serial run. The real-vLLM tests and the conformance suite are
one unit together: they spend their time in vLLM's single-threaded imports at each cold
start (ENGINE_CONTRACT §6), so one worker runs them end to end, one real engine pair at a
time, while the other worker runs everything else. That halves the wall time of the suite
on two cores; serially the real tier alone took 20 of about 45 minutes.

Without xdist (`pytest` on its own, `-p no:xdist`, `-n 0`) the marks do nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_ENGINE_GROUP = "real-vllm"
# Packages whose tests start real vLLM engines (package-scoped in conformance).
REAL_ENGINE_PACKAGES = ("real_vllm", "conformance")
TESTS = Path(__file__).resolve().parents[1]


def work_unit(path: Path) -> str:
    """The xdist group of a test file: the real-engine group, or the file itself."""
    relative = path.resolve().relative_to(TESTS)
    if relative.parts[0] in REAL_ENGINE_PACKAGES:
        return REAL_ENGINE_GROUP
    return relative.as_posix()


def pytest_itemcollected(item: pytest.Item) -> None:
    # Marked as each test is collected: xdist reads the marks into the tests' node ids in
    # its own pytest_collection_modifyitems, which runs before a conftest plugin's.
    item.add_marker(pytest.mark.xdist_group(work_unit(item.path)))


@pytest.hookimpl(trylast=True)  # after pytest's own ordering by parametrized fixtures
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The real-engine group first (the Makefile passes --no-loadscope-reorder, so xdist
    # hands out units in this order): started last, its 20 minutes would be the run's tail.
    items.sort(key=lambda item: work_unit(item.path) != REAL_ENGINE_GROUP)
