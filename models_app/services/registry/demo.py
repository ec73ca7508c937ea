"""The demo registry `llmux serve` loads into an empty database: simulated engines that
listen on Unix sockets of this data directory, so two demos on one host never collide.

Why sockets, not ports: ports chosen free at load time can still be taken by another demo
(or anything else) before the engines start; a socket path under this data directory
belongs to this instance alone.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from django.conf import settings

from llmux_site.core.config import RegistrySpec, load_config_file
from models_app.services.engines import socket_dir

DEMO_REGISTRY = Path(settings.BASE_DIR) / "llmux_site" / "demo" / "registry.yaml"
SOCKET_SUFFIX = ".sock"


def demo_spec(path: Path = DEMO_REGISTRY) -> RegistrySpec:
    """The demo registry with each engine on `<run dir>/<model>.sock` instead of its port."""
    spec = load_config_file(path)
    longest = max((len(os.fsencode(m.name)) for m in spec.models), default=0)
    sockets = socket_dir(1 + longest + len(SOCKET_SUFFIX))
    models = tuple(
        replace(model, port=None, uds=str(sockets / f"{model.name}{SOCKET_SUFFIX}"))
        for model in spec.models
    )
    return replace(spec, models=models)
