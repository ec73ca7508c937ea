"""Layer direction over the whole import graph: the layers import downwards only, no cycles.

Every `.py` file of llmux_site, models_app, checkpoints_app and dashboard (migrations aside)
is parsed with `ast`; every import counts, at module level or inside a function, and so
does `importlib.import_module("literal")`. `from x import y` is an import of module `x.y`
when that module exists, else of `x`. A module's parent packages are not counted as
imported: Python runs their `__init__`, but `__init__` files here only re-export downwards.
References by dotted string (settings, django-q2 task names) are not imports and are not
seen.

The layers and the directions allowed between them are drawn in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.core.test_core_is_pure import FORBIDDEN as DJANGO_FAMILY

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("llmux_site", "models_app", "checkpoints_app", "dashboard")
APPS = ("models_app", "checkpoints_app", "dashboard")

# Pure helpers of the project: importable by every layer, importing nothing of ours.
HELPERS = frozenset({"llmux_site.logs", "llmux_site.private_files"})
# What core publishes for the simulator: the ledger's format and OpenAI's error shape.
PUBLISHED_FOR_SIMULATOR = frozenset({"llmux_site.core.gpu_ledger", "llmux_site.core.openai_errors"})
# The layers below the Django middle, and what each may import of the repository.
LOWER_MAY_IMPORT: Mapping[str, frozenset[str]] = {
    "helpers": frozenset(),
    "core": frozenset({"core", "helpers"}),
    "gateway": frozenset({"core", "gateway", "helpers"}),
    "simulator": frozenset({"simulator"}),
}
# The page app renders what the domain apps hold; checkpoints hook into models through ports.
APP_MAY_IMPORT: Mapping[str, frozenset[str]] = {
    "models_app": frozenset(),
    "checkpoints_app": frozenset({"models_app"}),
    "dashboard": frozenset({"models_app", "checkpoints_app"}),
}
# A module of an app is an entry point when one of its dotted parts is one of these.
ENTRY_PARTS = frozenset(
    {"admin", "api", "apps", "consumers", "management", "routing", "signals", "tasks", "urls"}
    | {"views"}
)


@dataclass(frozen=True, slots=True, order=True)
class Import:
    """`importer` imports `imported` (a module of ours, or a third-party top-level name)."""

    importer: str
    imported: str
    line: int

    @property
    def edge(self) -> str:
        """`importer -> imported`, as failures name it."""
        return f"{self.importer} -> {self.imported}"


def module_files(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `packages` under `root`."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            if "migrations" in relative.parts:
                continue
            parts = relative.with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _import_module_literal(node: ast.AST) -> str | None:
    """The name `importlib.import_module` (or a bare `import_module`) gets as a literal."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    first = node.args[0]
    if called != "import_module" or not isinstance(first, ast.Constant):
        return None
    return first.value if isinstance(first.value, str) else None


def _names(node: ast.AST, module: str, is_package: bool, modules: frozenset[str]) -> list[str]:
    """The dotted names an import node (or an `import_module` call) imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            anchor = package[: len(package) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        # `from pkg import mod` imports module pkg.mod; `from mod import name` imports mod.
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    literal = _import_module_literal(node)
    return [literal] if literal else []


def _resolve(name: str, modules: frozenset[str]) -> str | None:
    """The deepest module of ours that `name` is or lies in; None when it is not ours."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: frozenset[str]) -> set[Import]:
    """Every import `module` makes: ours resolved to modules, others by top-level name."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        for name in _names(node, module, is_package, modules):
            top = name.split(".")[0]
            target = _resolve(name, modules) if top in PACKAGES else top
            if target and target != module:
                found.add(Import(module, target, getattr(node, "lineno", 0)))
    return found


def import_graph(root: Path = REPO_ROOT) -> list[Import]:
    """Every import of every module under `root`, sorted."""
    files = module_files(root)
    modules = frozenset(files)
    return sorted(imp for name, path in files.items() for imp in imports_of(name, path, modules))


def layer_of(module: str) -> str:
    """helpers, core, gateway, simulator, project (llmux_site's own modules), entry or domain.

    `project` is the composition root and the programs (settings, urls, asgi, serve, the web
    server): entry points too. `entry` and `domain` split the Django apps.
    """
    parts = module.split(".")
    if module in HELPERS:
        return "helpers"
    if parts[0] == "llmux_site":
        return parts[1] if len(parts) > 1 and parts[1] in LOWER_MAY_IMPORT else "project"
    if parts[0] == "dashboard" or ENTRY_PARTS & set(parts[1:]):
        return "entry"
    return "domain"


def broken_rules(imp: Import) -> list[str]:
    """The layer rules this one import breaks (none when it is allowed)."""
    source, target = layer_of(imp.importer), imp.imported
    ours = target.split(".")[0] in PACKAGES
    if not ours:
        pure = source in LOWER_MAY_IMPORT and target in DJANGO_FAMILY
        return [f"the {source} layer imports no Django"] if pure else []
    broken = []
    allowed = LOWER_MAY_IMPORT.get(source)
    published = source == "simulator" and target in PUBLISHED_FOR_SIMULATOR
    if allowed is not None and layer_of(target) not in allowed and not published:
        broken.append(f"the {source} layer imports nothing of the {layer_of(target)} layer")
    if source == "domain" and layer_of(target) in {"entry", "project"}:
        broken.append("services, adapters and models never import entry points")
    app, other = imp.importer.split(".")[0], target.split(".")[0]
    if app in APPS and other in APPS and other != app and other not in APP_MAY_IMPORT[app]:
        broken.append(f"{app} never imports {other}")
    return broken


def strongly_connected(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The import cycles: every strongly connected set of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
        graph.setdefault(target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = stack[stack.index(node) :]
            del stack[stack.index(node) :]
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


@functools.cache
def repository_graph() -> tuple[list[Import], list[tuple[str, str]]]:
    """The repository's imports, and the module-to-module edges among them (ours only)."""
    imports = import_graph()
    ours = {(i.importer, i.imported) for i in imports if i.imported.split(".")[0] in PACKAGES}
    return imports, sorted(ours)


def _where(imports: Iterable[Import], edge: str) -> str:
    lines = sorted(imp.line for imp in imports if imp.edge == edge)
    return f"{edge} (line {', '.join(map(str, lines))})"


def test_no_import_breaks_a_layer_rule() -> None:
    imports, _edges = repository_graph()
    new = {
        f"{_where(imports, imp.edge)}: {'; '.join(broken_rules(imp))}"
        for imp in imports
        if broken_rules(imp)
    }

    assert sorted(new) == []


def test_no_import_cycle_between_modules() -> None:
    _imports, edges = repository_graph()
    cycles = strongly_connected(edges)

    assert cycles == [], "modules importing each other: " + "; ".join(map(" ".join, cycles))


@pytest.mark.parametrize(
    ("importer", "imported", "broken"),
    [
        ("llmux_site.core.gpu", "llmux_site.simulator.ledger", "core layer imports nothing"),
        ("llmux_site.core.switcher", "models_app.models", "core layer imports nothing"),
        ("llmux_site.core.switcher", "django", "core layer imports no Django"),
        ("llmux_site.gateway.app", "llmux_site.settings", "gateway layer imports nothing"),
        ("llmux_site.gateway.app", "channels", "gateway layer imports no Django"),
        ("llmux_site.simulator.engine", "llmux_site.core.gpu", "simulator layer imports nothing"),
        ("llmux_site.logs", "llmux_site.core.threads", "helpers layer imports nothing"),
        ("models_app.services.control", "models_app.api.views", "never import entry points"),
        ("models_app.services.control", "llmux_site.asgi", "never import entry points"),
        ("models_app.services.control", "checkpoints_app.models", "never imports checkpoints_app"),
        ("models_app.admin", "dashboard.views", "models_app never imports dashboard"),
        ("checkpoints_app.models", "dashboard.charts", "never imports dashboard"),
    ],
)
def test_an_import_against_the_layers_is_refused(importer: str, imported: str, broken: str) -> None:
    assert broken in "; ".join(broken_rules(Import(importer, imported, 1)))


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("llmux_site.core.notify_relay", "llmux_site.logs"),
        ("llmux_site.gateway.errors", "llmux_site.core.openai_errors"),
        ("llmux_site.simulator.server", "llmux_site.core.gpu_ledger"),
        ("llmux_site.simulator.server", "aiohttp"),
        ("models_app.services.control", "django"),
        ("models_app.services.control", "llmux_site.core.switcher"),
        ("models_app.api.views", "models_app.services.control"),
        ("checkpoints_app.services.store", "models_app.protocol"),
        ("dashboard.views", "checkpoints_app.models"),
        ("llmux_site.asgi", "dashboard.routing"),
    ],
)
def test_an_import_down_the_layers_is_allowed(importer: str, imported: str) -> None:
    assert broken_rules(Import(importer, imported, 1)) == []


def test_the_graph_sees_every_import_and_resolves_it_to_a_module(tmp_path: Path) -> None:
    (tmp_path / "models_app" / "services").mkdir(parents=True)
    (tmp_path / "dashboard").mkdir()
    for name in ("models_app/__init__", "models_app/services/__init__", "dashboard/__init__"):
        (tmp_path / f"{name}.py").write_text("")
    (tmp_path / "dashboard" / "snapshot.py").write_text("VALUE = 1\n")
    (tmp_path / "models_app" / "services" / "audit.py").write_text("X = 1\n")
    (tmp_path / "models_app" / "services" / "control.py").write_text(
        "import json\n"
        "from . import audit\n"
        "from django.db import models\n"
        "def status():\n"
        "    from dashboard.snapshot import VALUE\n"
        "    return importlib.import_module('dashboard')\n"
    )

    imports = [imp for imp in import_graph(tmp_path) if imp.importer.endswith("control")]

    assert [(imp.imported, imp.line) for imp in imports] == [
        ("dashboard", 6),
        ("dashboard.snapshot", 5),
        ("django", 3),
        ("json", 1),
        ("models_app.services.audit", 2),
    ]


def test_cycles_are_found_however_long() -> None:
    edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("e", "d"), ("f", "a")]

    assert strongly_connected(edges) == [["a", "b", "c"], ["d", "e"]]
