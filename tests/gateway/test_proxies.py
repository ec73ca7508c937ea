"""Which address is a request's real client, behind which proxies (pure: scopes in, out)."""

from __future__ import annotations

from typing import Any

import pytest

from llmux_site.gateway.proxies import TrustedProxies, parse_networks

LOOPBACK = ["127.0.0.0/8", "::1"]


def scope(peer: str | None, *forwarded: str, kind: str = "http") -> dict[str, Any]:
    headers = [(b"host", b"llmux.example")]
    headers += [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return {"type": kind, "client": None if peer is None else [peer, 50000], "headers": headers}


def client_of(proxies: list[str], request: dict[str, Any]) -> str | None:
    rewritten = TrustedProxies(proxies).real_client(request)
    return None if rewritten["client"] is None else str(rewritten["client"][0])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
        ("::1", ["2001:db8::7"], "2001:db8::7"),
        # What the client wrote itself lies left of what the proxy appended.
        ("127.0.0.1", ["127.0.0.1, 203.0.113.7"], "203.0.113.7"),
        ("127.0.0.1", ["198.51.100.1, 203.0.113.7"], "203.0.113.7"),
        # Proxies in a row, each trusted: the first address none of them is.
        ("127.0.0.1", ["203.0.113.7, 127.0.0.2"], "203.0.113.7"),
        # One header per hop (HAProxy's option forwardfor) reads like one list.
        ("127.0.0.1", ["198.51.100.1", "203.0.113.7"], "203.0.113.7"),
        # Ports some proxies add.
        ("127.0.0.1", ["203.0.113.7:4711"], "203.0.113.7"),
        ("127.0.0.1", ["[2001:db8::7]:4711"], "2001:db8::7"),
        # Every hop trusted: the left-most is the client.
        ("127.0.0.1", ["127.0.0.5, 127.0.0.6"], "127.0.0.5"),
        # No address where one was due: the trusted hop that passed it on is all we know.
        ("127.0.0.1", ["evil"], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.7, unknown, 127.0.0.9"], "127.0.0.9"),
        # An untrusted peer's claims are ignored.
        ("192.0.2.1", ["127.0.0.1"], "192.0.2.1"),
        ("127.0.0.1", [], "127.0.0.1"),
        (None, ["203.0.113.7"], None),  # a Unix socket: no peer address to trust
    ],
)
def test_the_real_client_is_the_right_most_address_not_a_trusted_proxy(
    peer: str | None, forwarded: list[str], expected: str | None
) -> None:
    assert client_of(LOOPBACK, scope(peer, *forwarded)) == expected


def test_nothing_is_believed_without_trusted_proxies() -> None:
    proxies = TrustedProxies([])

    assert not proxies
    assert proxies.real_client(scope("127.0.0.1", "203.0.113.7"))["client"][0] == "127.0.0.1"


def test_every_scope_type_is_rewritten_and_the_original_left_alone() -> None:
    for kind in ("http", "websocket"):
        original = scope("10.1.2.3", "203.0.113.7", kind=kind)

        rewritten = TrustedProxies(["10.0.0.0/8"]).real_client(original)

        assert rewritten["client"] == ["203.0.113.7", 0]
        assert original["client"] == ["10.1.2.3", 50000]
        assert rewritten["headers"] is original["headers"]


def test_networks_are_checked_when_read() -> None:
    assert [str(n) for n in parse_networks([" 10.0.0.0/8", "::1", "192.168.1.7/24"])] == [
        "10.0.0.0/8",
        "::1/128",
        "192.168.1.0/24",
    ]
    with pytest.raises(ValueError, match=r"'proxy\.example' is not an IP address or network"):
        parse_networks(["proxy.example"])
