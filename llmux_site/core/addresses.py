"""Where an engine listens: loopback TCP or a Unix socket, never a network address."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

# vLLM's control endpoints (sleep, wake, collective_rpc) carry no authentication, so an
# engine must only ever be reachable from this host.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class AddressError(ValueError):
    """An engine address that is malformed or not confined to this host."""


def is_loopback_host(host: str) -> bool:
    """True for localhost and any address in 127.0.0.0/8 or ::1."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """An engine's listen address: exactly one of (host, port) or uds."""

    host: str = "127.0.0.1"
    port: int | None = None
    uds: str | None = None

    def __post_init__(self) -> None:
        if (self.port is None) == (self.uds is None):
            raise AddressError("an engine address needs exactly one of a port or a unix socket")
        if self.port is not None:
            if not 1 <= self.port <= 65535:
                raise AddressError(f"port {self.port} is out of range 1-65535")
            if not is_loopback_host(self.host):
                raise AddressError(
                    f"engine host {self.host!r} is not loopback: engine control endpoints "
                    "are unauthenticated and must only listen on 127.0.0.1, ::1 or a unix socket"
                )
        if self.uds is not None:
            if not os.path.isabs(self.uds):
                raise AddressError(f"unix socket path {self.uds!r} must be absolute")
            # sockaddr_un.sun_path is 108 bytes including the terminating NUL.
            if len(os.fsencode(self.uds)) > 107:
                raise AddressError(f"unix socket path {self.uds!r} is longer than 107 bytes")

    @classmethod
    def tcp(cls, port: int, host: str = "127.0.0.1") -> ListenAddress:
        return cls(host=host, port=port)

    @classmethod
    def unix(cls, path: str) -> ListenAddress:
        return cls(uds=path)

    @property
    def is_unix(self) -> bool:
        return self.uds is not None

    def cli_args(self) -> list[str]:
        """The vLLM (and llmux-sim) flags that make an engine listen here."""
        if self.uds is not None:
            return ["--uds", self.uds]
        return ["--host", self.host, "--port", str(self.port)]

    def base_url(self) -> str:
        """The HTTP origin to use; for a unix socket the host part is nominal."""
        if self.uds is not None:
            return "http://localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __str__(self) -> str:
        return f"unix:{self.uds}" if self.uds is not None else f"{self.host}:{self.port}"
