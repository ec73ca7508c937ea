"""Which Host a request may name: Django's ``ALLOWED_HOSTS`` rules, without Django. Pure.

A browser sends whatever Host the page's URL had, so a page on another site that reaches
the gateway (through DNS rebinding, or a name that resolves to loopback) names a host of
its own; refusing hosts outside the list keeps such pages out, as Django does for pages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

# Django's host_validation_re: a domain, or an IPv6 literal in brackets; an optional port.
_HOST: Final = re.compile(r"^([a-z0-9.-]+|\[[a-f0-9]*:[a-f0-9.:]+\])(?::([0-9]+))?$")
_CACHE_SIZE: Final = 256  # distinct Host values remembered; clients name very few


def host_domain(host: str) -> str:
    """The lowercased domain of a Host value without its port or trailing dot; "" if invalid."""
    match = _HOST.fullmatch(host.lower())
    return match.group(1).removesuffix(".") if match else ""


class AllowedHosts:
    """``ALLOWED_HOSTS`` patterns: ``*`` any valid host, ``.example.com`` that domain and
    its subdomains, anything else exactly (case-insensitive); ports are not compared."""

    def __init__(self, patterns: Iterable[str]) -> None:
        lowered = [pattern.lower() for pattern in patterns if pattern]
        self._any = "*" in lowered
        self._exact = frozenset(lowered)
        self._suffixes = tuple(pattern for pattern in lowered if pattern.startswith("."))
        self._seen: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        """Whether a request naming ``host`` (a Host header's value) may be served."""
        known = self._seen.get(host)
        if known is not None:
            return known
        allowed = self._match(host_domain(host))
        if len(self._seen) < _CACHE_SIZE:  # a client inventing hosts only misses the cache
            self._seen[host] = allowed
        return allowed

    def _match(self, domain: str) -> bool:
        if not domain:
            return False
        if self._any or domain in self._exact:
            return True
        return any(domain.endswith(suffix) or domain == suffix[1:] for suffix in self._suffixes)
