"""The gateway package imports no Django (nor DRF, Channels, django-q2 or daphne)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.core.test_core_is_pure import FORBIDDEN, REPO_ROOT, forbidden_imports

GATEWAY = REPO_ROOT / "llmux_site" / "gateway"

IMPORT_EVERY_GATEWAY_MODULE = """
import importlib, json, pkgutil, sys
import llmux_site.gateway as gateway
names = [m.name for m in pkgutil.walk_packages(gateway.__path__, "llmux_site.gateway.")]
for name in names:
    importlib.import_module(name)
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[1])))
print(json.dumps({"modules": names, "forbidden": loaded}))
"""


def test_importing_every_gateway_module_loads_no_django() -> None:
    config = {"models": [{"name": "m", "upstream": {"port": 9}}]}
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_GATEWAY_MODULE, json.dumps(sorted(FORBIDDEN))],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO_ROOT),
            "LLMUX_GATEWAY_CONFIG": json.dumps(config),
        },
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "llmux_site.gateway.standalone" in result["modules"]
    assert result["forbidden"] == []


def test_no_gateway_module_imports_django_or_its_friends() -> None:
    assert forbidden_imports(GATEWAY) == []
