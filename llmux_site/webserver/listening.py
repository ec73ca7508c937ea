"""How a web process takes its listening socket from `llmux serve` and says it listens.

`llmux serve` binds one socket per web process (llmux_site/serve.py) and starts each child
with daphne's ``--fd N``. Twisted's ``fd:`` endpoint assumes IPv4 unless told the family in
a form its string parser cannot carry, so a socket on an IPv6 address would be adopted as
IPv4 and misread: ``adopting_endpoint`` reads the family from the socket itself.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import endpoints

from llmux_site.serve import READY_FD_VARIABLE


def adopting_endpoint(reactor: Any, description: str) -> Any:
    """Twisted's ``serverFromString``, with ``fd:fileno=N`` adopted in N's own family."""
    if not description.startswith("fd:"):
        return endpoints.serverFromString(reactor, description)  # type: ignore[no-untyped-call]
    fields = dict(part.split("=", 1) for part in description[3:].split(":") if "=" in part)
    fileno = int(fields["fileno"])
    probe = socket.socket(fileno=fileno)  # family, type and protocol read from the socket
    family = probe.family
    probe.detach()  # the descriptor stays open, for Twisted to adopt
    return endpoints.AdoptedStreamServerEndpoint(reactor, fileno, family)  # type: ignore[no-untyped-call]


def ready_signal(environ: Mapping[str, str] = os.environ) -> Callable[[], None] | None:
    """Writes one byte to the pipe `llmux serve` passed in ``LLMUX_WEB_READY_FD``, once."""
    raw = environ.get(READY_FD_VARIABLE)
    if not raw:
        return None
    fd = int(raw)

    def signal_ready() -> None:
        try:
            os.write(fd, b".")
        finally:
            os.close(fd)

    return signal_ready
