"""The real client of a request that came through trusted reverse proxies. Pure.

Behind a proxy every client connects from the proxy's address (loopback, when it runs on
the same host), so rules about where a client is (keys required beyond loopback, /metrics
for local scrapers, audit addresses, login throttling) need the address the proxy saw.
Each proxy appends the address it got the request from to X-Forwarded-For; only the
entries appended by proxies we trust are believed, so the real client is the right-most
entry that is not itself a trusted proxy (what a client wrote there itself lies left of it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, MutableMapping
from typing import Any, Final

Scope = MutableMapping[str, Any]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_CACHE_SIZE: Final = 1024  # addresses whose trust is remembered


def parse_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Addresses or CIDRs (``10.0.0.0/8``, ``::1``); ValueError naming a bad one."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry.strip()!r} is not an IP address or network") from None
    return tuple(networks)


def forwarded_address(entry: str) -> str | None:
    """The IP address of one X-Forwarded-For entry (a port, if any, dropped), or None."""
    entry = entry.strip()
    if entry.startswith("["):  # [IPv6]:port
        entry = entry[1:].partition("]")[0]
    elif entry.count(":") == 1:  # IPv4:port
        entry = entry.partition(":")[0]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


class TrustedProxies:
    """Proxies whose X-Forwarded-For is believed; ``real_client`` rewrites a scope."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = parse_networks(networks)
        self._trusted: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        known = self._trusted.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                known = False
            else:
                known = any(ip in network for network in self.networks)
            if len(self._trusted) < _CACHE_SIZE:
                self._trusted[address] = known
        return known

    def real_client(self, scope: Scope) -> Scope:
        """``scope`` itself, or a copy whose ``client`` is the address a trusted proxy saw."""
        client = scope.get("client")
        if not client or not self.trusts(client[0]):
            return scope
        values = [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
        if not values:
            return scope
        address = self._walk(b",".join(values).decode("latin-1").split(","))
        if address is None or address == client[0]:
            return scope
        return {**scope, "client": [address, 0]}  # the client's own port is not forwarded

    def _walk(self, entries: list[str]) -> str | None:
        """The right-most entry that is not a trusted proxy; where an entry is no address,
        the trusted hop right of it (None: the peer itself) is the best that is known."""
        found = None
        for entry in reversed(entries):
            address = forwarded_address(entry)
            if address is None:
                return found
            found = address
            if not self.trusts(address):
                return address
        return found  # every hop is trusted: the left-most is the client
