"""The orchestration core imports no Django (nor DRF, Channels or django-q2)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CORE = REPO_ROOT / "llmux_site" / "core"
FORBIDDEN = frozenset(
    {"django", "rest_framework", "channels", "channels_redis", "django_q", "daphne"}
)

IMPORT_EVERY_CORE_MODULE = """
import importlib, json, pkgutil, sys
import llmux_site.core as core
names = [m.name for m in pkgutil.walk_packages(core.__path__, "llmux_site.core.")]
for name in names:
    importlib.import_module(name)
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[1])))
print(json.dumps({"modules": names, "forbidden": loaded}))
"""


def forbidden_imports(root: Path) -> list[str]:
    """``path:line: module`` for every import of a forbidden package under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] in FORBIDDEN:
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {name}")
    return found


def test_importing_every_core_module_loads_no_django() -> None:
    # A fresh interpreter: this test process has Django loaded by pytest-django already.
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_CORE_MODULE, json.dumps(sorted(FORBIDDEN))],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "llmux_site.core.supervisor" in result["modules"]
    assert result["forbidden"] == []


def test_no_core_module_imports_django_or_its_friends() -> None:
    assert forbidden_imports(CORE) == []


def test_the_scan_finds_django_imports_in_any_form(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "ok.py").write_text("import os\nfrom . import django\n")
    (tmp_path / "pkg" / "bad.py").write_text(
        "import django\n"
        "from django.db import models\n"
        "def f():\n"
        "    import rest_framework.views, json\n"
        "    from channels.layers import get_channel_layer\n"
        "    from django_q.tasks import async_task\n"
    )

    assert forbidden_imports(tmp_path) == [
        "pkg/bad.py:1: django",
        "pkg/bad.py:2: django.db",
        "pkg/bad.py:4: rest_framework.views",
        "pkg/bad.py:5: channels.layers",
        "pkg/bad.py:6: django_q.tasks",
    ]
