"""llmux's `admin_port` and `metrics_port`: the control routes without authentication and
/metrics, on loopback only, beside the main port (which keeps its authentication)."""

from __future__ import annotations

import contextlib
import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.integration.harness import Llmux
from tests.integration.test_switching import two_models
from tests.plugins.engines import free_port


def call(url: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, method="GET" if data is None else "POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as failed:
        return failed.code, failed.read()


def outward_address() -> str | None:
    """An address of this host that is not loopback (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, contextlib.suppress(OSError):
        probe.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
        address = str(probe.getsockname()[0])
        return None if address.startswith("127.") else address
    return None


@pytest.fixture
def ports(llmux: Llmux) -> tuple[int, int]:
    admin, metrics = free_port(), free_port()
    llmux.start(two_models() | {"admin_port": admin, "metrics_port": metrics})
    return admin, metrics


def test_the_admin_port_serves_the_control_routes_without_credentials(
    llmux: Llmux, ports: tuple[int, int]
) -> None:
    admin, _ = ports
    status, body = call(f"http://127.0.0.1:{admin}/control/switch", {"model": "alpha"})
    assert (status, json.loads(body)) == (200, {"message": "Switched to model: alpha"})
    status, body = call(f"http://127.0.0.1:{admin}/control/status")
    assert status == 200 and json.loads(body)["state"] == "active:alpha"
    # Only the control routes there; the main port still asks for credentials.
    status, body = call(f"http://127.0.0.1:{admin}/api/status/")
    assert status == 404 and "admin_port" in json.loads(body)["error"]
    assert call(f"http://127.0.0.1:{admin}/v1/models")[0] == 404
    assert call(f"{llmux.base_url.removesuffix('/v1')}/control/status")[0] == 401

    assert llmux.query("SELECT to_name, actor FROM models_app_swapevent") == [
        ("alpha", "llmux-admin-port")
    ]
    assert llmux.query("SELECT actor_name, action, source FROM models_app_auditentry") == [
        ("llmux-admin-port", "switch", "api")
    ]


def test_the_metrics_port_serves_metrics_only(llmux: Llmux, ports: tuple[int, int]) -> None:
    _, metrics = ports
    status, body = call(f"http://127.0.0.1:{metrics}/metrics")
    assert status == 200 and b"# TYPE llmux_" in body
    assert call(f"http://127.0.0.1:{metrics}/control/status")[0] == 404
    assert call(f"http://127.0.0.1:{metrics}/")[0] == 404


def test_the_side_ports_listen_on_loopback_only(llmux: Llmux, ports: tuple[int, int]) -> None:
    address = outward_address()
    assert address is not None, "this host has no address beyond loopback to try"
    for port in ports:
        with socket.socket() as client, pytest.raises(ConnectionRefusedError):
            client.settimeout(5)
            client.connect((address, port))
