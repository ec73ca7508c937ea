"""The gateway's host check means what Django's ALLOWED_HOSTS means (it cannot import it)."""

from __future__ import annotations

import pytest
from django.http.request import split_domain_port, validate_host

from llmux_site.gateway.hosts import AllowedHosts

HOSTS = [
    "localhost",
    "LOCALHOST:80",
    "localhost.",
    "127.0.0.1:8000",
    "[::1]",
    "[::1]:8000",
    "::1",
    "example.com",
    "a.example.com",
    "aexample.com",
    "example.com.evil",
    "evil.com:80@example.com",
    "",
    "under_score.example.com",
    "exa mple.com",
    "[fe80::1%eth0]",
    "example.com:abc",
]
PATTERNS = [
    ["127.0.0.1", "localhost", "[::1]"],
    [".example.com"],
    ["example.com", "LOCALHOST"],
    ["*"],
    [],
    [""],
]


@pytest.mark.parametrize("patterns", PATTERNS)
def test_allowed_hosts_mean_what_they_mean_to_django(patterns: list[str]) -> None:
    allowed = AllowedHosts(patterns)

    for host in HOSTS:
        domain, _port = split_domain_port(host)
        expected = bool(domain) and validate_host(domain, patterns)
        assert allowed.allows(host) is expected, (host, patterns)
