"""What the gateway refuses before anything else happens: a foreign Host, a POST that is
not JSON, a path that is not an inference route. Nothing is acquired, parsed or forwarded.

A page on another site (or one reached by DNS rebinding) can make a browser send a simple
POST to the gateway, with any Host and a ``text/plain`` body; the gateway must not let it
switch a model or reach an engine's administrative routes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.gateway.conftest import EchoUpstream, GatewayLauncher, GatewayStack
from tests.gateway.test_errors import assert_openai_error, raw_request

CHAT = json.dumps({"model": "switching", "messages": [{"role": "user", "content": "hi"}]})
JSON = {"Content-Type": "application/json"}


def acquired(stack: GatewayStack, model: str) -> int:
    return stack.gateway.counts()[model]["acquired"]


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.", "[::2]"]
)
def test_it_refuses_a_foreign_host_with_400_before_anything_happens(
    gateway_stack: GatewayStack, host: str
) -> None:
    before = acquired(gateway_stack, "switching")
    url = gateway_stack.gateway.url

    status, answer = raw_request(
        f"{url}/v1/chat/completions", CHAT.encode(), headers={**JSON, "Host": host}
    )
    list_status, listed = raw_request(
        f"{url}/v1/models", None, method="GET", headers={"Host": host}
    )

    expected = 200 if host == "localhost." else 400  # Django drops a trailing dot too
    assert (status, list_status) == (expected, expected), host
    if expected == 400:
        assert assert_openai_error(answer, 400)["type"] == "BadRequestError"
        assert "Host" in assert_openai_error(listed, 400)["message"]
        assert acquired(gateway_stack, "switching") == before  # no switch, no slot


def test_it_serves_allowed_hosts_with_any_port(gateway_stack: GatewayStack) -> None:
    for host in ("localhost:1234", "127.0.0.1", "LOCALHOST", "[::1]:80"):
        status, _answer = raw_request(
            f"{gateway_stack.gateway.url}/v1/models", None, method="GET", headers={"Host": host}
        )
        assert status == 200, host


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
def test_it_refuses_a_post_that_is_not_json_with_415(
    gateway_stack: GatewayStack, content_type: str | None
) -> None:
    before = acquired(gateway_stack, "switching")
    headers = {} if content_type is None else {"Content-Type": content_type}

    status, answer = raw_request(
        f"{gateway_stack.gateway.url}/v1/chat/completions", CHAT.encode(), headers=headers
    )

    assert status == 415, content_type
    assert assert_openai_error(answer, 415)["type"] == "UnsupportedMediaTypeError"
    assert acquired(gateway_stack, "switching") == before


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_it_takes_json_with_parameters_in_any_case(
    gateway_stack: GatewayStack, content_type: str
) -> None:
    body = json.dumps({"model": "chat", "prompt": "hi", "max_tokens": 2}).encode()

    status, _answer = raw_request(
        f"{gateway_stack.gateway.url}/v1/completions", body, headers={"Content-Type": content_type}
    )

    assert status == 200


ADMIN_ROUTES = [
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
    "/v1/sleep",
    "/v1/collective_rpc",
    "/v1/chat/completions/../../load_lora_adapter",
    "/v1/custom/endpoint",
]


def test_only_inference_routes_reach_the_engine(
    start_gateway: GatewayLauncher, echo_upstream: EchoUpstream
) -> None:
    gateway = start_gateway([{"name": "m", "upstream": {"port": echo_upstream.port}}])
    body = json.dumps({"model": "m", "lora_name": "x", "lora_path": "/tmp/x"}).encode()
    answers: dict[str, tuple[int, dict[str, Any]]] = {
        path: raw_request(f"{gateway.url}{path}", body, headers=JSON) for path in ADMIN_ROUTES
    }

    for path, (status, answer) in answers.items():
        assert status == 404, path
        assert_openai_error(answer, 404)
    assert echo_upstream.seen == []  # not one of them reached the engine
    inference = json.dumps({"model": "m", "prompt": "hi", "input": "hi"}).encode()
    for path in ("/v1/responses", "/v1/rerank", "/v1/score", "/v1/completions"):
        status, echoed = raw_request(f"{gateway.url}{path}?x=1", inference, headers=JSON)
        assert (status, echoed["raw_path"]) == (200, f"{path}?x=1")
