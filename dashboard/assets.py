"""Third-party browser assets served from the Python packages that ship them.

plotly.js comes inside the `plotly` package (a pinned dependency installed with the
rest), so no asset is pasted into the repository and none is fetched from the internet
when a page loads. This finder lets the static files machinery (and `collectstatic`)
serve it as `vendor/plotly.min.js`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

# URL path under STATIC_URL -> (package, file inside it)
ASSETS = {"vendor/plotly.min.js": ("plotly", "package_data/plotly.min.js")}


def asset_path(name: str) -> Path | None:
    package, inner = ASSETS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    return path if path.is_file() else None


class PackageAssetFinder(BaseFinder):
    def check(self, **kwargs: Any) -> list[Any]:
        from django.core.checks import Error

        return [
            Error(f"{name}: the {ASSETS[name][0]} package is not installed", id="dashboard.E001")
            for name in ASSETS
            if asset_path(name) is None
        ]

    def find(  # type: ignore[override]  # Django 5.2 passes find_all (or all) by keyword
        self, path: str, find_all: bool = False, **kwargs: Any
    ) -> str | list[str]:
        found = asset_path(path) if path in ASSETS else None
        if found is None:
            # [] either way, as Django's finders answer: finders.find() keeps a falsy
            # non-list as [""], which then passes for a match and crashes the serve view.
            return []
        return [str(found)] if find_all else str(found)

    def list(self, ignore_patterns: Any) -> Iterator[tuple[str, FileSystemStorage]]:
        for name in ASSETS:
            found = asset_path(name)
            if found is not None:
                storage = FileSystemStorage(location=str(found.parent))
                storage.prefix = str(Path(name).parent)  # type: ignore[attr-defined]
                yield found.name, storage
