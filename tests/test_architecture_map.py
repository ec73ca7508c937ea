"""docs/ARCHITECTURE.md is a map of the code: every package and module has its line there, and
every module the page names exists.

A package is named by its folder (`llmux_site/core/`), a module by its file
(`llmux_site/core/gpu.py`), in backquotes, in the page's `## Map` section. Migrations are
named by their package only.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO_ROOT / "docs" / "ARCHITECTURE.md"
PACKAGES = ("llmux_site", "models_app", "checkpoints_app", "dashboard")
NAMED = re.compile(r"`((?:" + "|".join(PACKAGES) + r")(?:/[\w.]+)*(?:\.py|/))`")


def code_paths(root: Path) -> set[str]:
    """Every package (`a/b/`) and module (`a/b/c.py`, not `__init__`, not a migration)."""
    found = set()
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            relative = path.relative_to(root)
            if path.name == "__init__.py":
                found.add(f"{relative.parent.as_posix()}/")
            elif "migrations" not in relative.parts:
                found.add(relative.as_posix())
    return found


def map_section(text: str) -> str:
    """The text of the `## Map` section (up to the next second-level heading)."""
    start = text.index("\n## Map\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def named_paths(text: str) -> set[str]:
    return set(NAMED.findall(text))


def unmapped(root: Path, text: str) -> list[str]:
    """Packages and modules of the code that the map leaves out."""
    return sorted(code_paths(root) - named_paths(map_section(text)))


def stale(root: Path, text: str) -> list[str]:
    """Packages and modules the page names (anywhere in it) that do not exist."""
    return sorted(name for name in named_paths(text) if not (root / name).exists())


def test_every_package_and_module_is_on_the_map() -> None:
    assert unmapped(REPO_ROOT, ARCHITECTURE.read_text()) == []


def test_every_module_the_page_names_exists() -> None:
    assert stale(REPO_ROOT, ARCHITECTURE.read_text()) == []


def test_a_module_missing_from_the_map_or_gone_from_the_code_is_found(tmp_path: Path) -> None:
    (tmp_path / "models_app" / "services").mkdir(parents=True)
    for name in ("__init__.py", "services/__init__.py", "services/control.py", "tasks.py"):
        (tmp_path / "models_app" / name).write_text("")
    page = (
        "# Architecture\n\nThe worker runs `models_app/services/switch_queue.py`.\n\n## Map\n"
        "- `models_app/`: the domain app\n"
        "- `models_app/services/`: use cases\n"
        "- `models_app/services/control.py`: operator control\n"
        "## Paths\n- `models_app/tasks.py` (named outside the map)\n"
    )

    assert unmapped(tmp_path, page) == ["models_app/tasks.py"]
    assert stale(tmp_path, page) == ["models_app/services/switch_queue.py"]
