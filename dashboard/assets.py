"""Third-party browser assets served from the packages that ship them.

plotly.js comes from its npm package, installed into `node_modules/` by
scripts/install-assets.sh (`make run` and `make test` run it; package-lock.json pins the
version and its integrity), so no asset is pasted into the repository and none is fetched
from the internet when a page loads. This finder lets the static files machinery (and
`collectstatic`) serve it as `vendor/plotly-cartesian.min.js`.

Why the cartesian bundle: the charts draw bars, lines and box plots, all in it; it is
1.5 MB (0.5 MB gzipped, as llmux_site.static_assets serves it) where the full plotly.js
the `plotly` Python package ships is 4.8 MB (1.4 MB gzipped), and no PyPI package ships a
partial bundle.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage

INSTALL = "scripts/install-assets.sh"
# URL path under STATIC_URL -> (npm package, file inside it)
ASSETS = {
    "vendor/plotly-cartesian.min.js": (
        "plotly.js-cartesian-dist-min",
        "plotly-cartesian.min.js",
    ),
}


def node_modules() -> Path:
    return Path(settings.BASE_DIR) / "node_modules"


def asset_path(name: str) -> Path | None:
    package, inner = ASSETS[name]
    path = node_modules() / package / inner
    return path if path.is_file() else None


class PackageAssetFinder(BaseFinder):
    def check(self, **kwargs: Any) -> list[Any]:
        # A warning, not an error: without it only the charts page lacks its charts (and
        # says so), and an error would stop every management command, `migrate` too.
        from django.core.checks import Warning

        return [
            Warning(
                f"{name}: the npm package {ASSETS[name][0]} is not installed",
                hint=f"run {INSTALL} (make run and make test do)",
                id="dashboard.W001",
            )
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
