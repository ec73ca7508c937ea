"""The demo registry `llmux serve` loads into an empty database: simulated engines that
listen on Unix sockets of this data directory, so two demos on one host never collide.

Why sockets, not ports: ports chosen free at load time can still be taken by another demo
(or anything else) before the engines start; a socket path under this data directory
belongs to this instance alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

from llmux_site.core.config import RegistrySpec, parse_config
from llmux_site.core.config_text import decode_config_text, guess_format
from models_app.services.engines import socket_dir

DEMO_REGISTRY = Path(settings.BASE_DIR) / "llmux_site" / "demo" / "registry.yaml"
SOCKET_SUFFIX = ".sock"


def demo_spec(path: Path = DEMO_REGISTRY) -> RegistrySpec:
    """The demo registry with each engine on `<run dir>/<model>.sock` (the file names no
    port: the socket is given here, before the config is read)."""
    text = path.read_text(encoding="utf-8")
    document = decode_config_text(text, guess_format(path, text))
    models = document.get("models", {}) if isinstance(document, dict) else {}
    longest = max((len(os.fsencode(name)) for name in models), default=0)
    sockets = socket_dir(1 + longest + len(SOCKET_SUFFIX))
    for name, model in models.items():
        model["uds"] = str(sockets / f"{name}{SOCKET_SUFFIX}")
    return parse_config(document)
