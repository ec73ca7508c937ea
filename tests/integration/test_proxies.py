"""Behind a reverse proxy on the same host every client connects from loopback: the real
client is the one X-Forwarded-For names, when (and only when) the proxy is trusted.

llmux binds loopback here, so with `LLMUX_REQUIRE_API_KEY=auto` a key is required only of
callers beyond it, and /metrics answers loopback scrapers without a login.
"""

from __future__ import annotations

import http.client
from typing import Any

from tests.integration.harness import Llmux, sim_model
from tests.plugins.engines import free_port

CHAT = b'{"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'
INTERNET = "203.0.113.7"


def config() -> dict[str, Any]:
    return {
        "vllm_command": "llmux-sim",
        "policy": {"min_active_secs": 0},
        "models": {"alpha": sim_model(free_port())},
    }


def request(server: Llmux, method: str, path: str, forwarded_for: str | None = None) -> int:
    """The status of one request from loopback, as a proxy would send it for a client."""
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-anything"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request(method, path, body=CHAT if method == "POST" else None, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_a_client_a_trusted_proxy_forwards_from_the_internet_is_not_local(llmux: Llmux) -> None:
    llmux.start(config())  # loopback proxies are trusted by default

    local = (request(llmux, "POST", "/v1/chat/completions"), request(llmux, "GET", "/metrics"))
    forwarded = (
        request(llmux, "POST", "/v1/chat/completions", INTERNET),
        request(llmux, "GET", "/metrics", INTERNET),
        # A client that names loopback itself is still where the proxy saw it.
        request(llmux, "GET", "/metrics", f"127.0.0.1, {INTERNET}"),
        request(llmux, "GET", "/v1/models", f"127.0.0.1, {INTERNET}, 127.0.0.1"),
    )

    assert local == (200, 200)
    assert forwarded == (401, 401, 401, 401)


def test_the_forwarded_address_of_an_untrusted_peer_is_ignored(llmux: Llmux) -> None:
    llmux.start(config(), env={"LLMUX_TRUSTED_PROXIES": "192.0.2.10"})

    statuses = (
        request(llmux, "POST", "/v1/chat/completions", INTERNET),
        request(llmux, "GET", "/metrics", INTERNET),
    )

    assert statuses == (200, 200)  # the peer is loopback; what it claims is not believed
