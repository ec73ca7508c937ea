"""Every failure reaches the client with the right status and OpenAI's error shape."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import openai
import pytest

from llmux_site.gateway.errors import GatewayError
from tests.gateway.conftest import (
    MAX_BODY,
    REQUEST_TIMEOUT,
    EchoUpstream,
    GatewayLauncher,
    GatewayStack,
)


def raw_request(
    url: str, body: bytes | None, *, method: str = "POST", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """One exchange with a body exactly as given (JSON's Content-Type unless ``headers``
    are given); returns (status, JSON answer)."""
    if headers is None:
        headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_openai_error(answer: dict[str, Any], status: int) -> dict[str, Any]:
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status
    assert isinstance(error["message"], str) and error["message"]
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'["model", "chat"]', "must be a JSON object"),
        (b'{"prompt": "hi"}', "`model` is required"),
        (b'{"model": 7, "prompt": "hi"}', "`model` must be a string"),
    ],
)
def test_it_rejects_malformed_bodies_with_400(
    gateway_stack: GatewayStack, body: bytes, expected: str
) -> None:
    status, answer = raw_request(f"{gateway_stack.gateway.url}/v1/completions", body)

    assert status == 400
    assert expected in assert_openai_error(answer, 400)["message"]


def test_it_answers_404_naming_an_unknown_model(gateway_stack: GatewayStack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        gateway_stack.gateway.client().chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )

    assert caught.value.status_code == 404
    assert "no-such-model" in caught.value.message
    body = caught.value.body
    assert isinstance(body, dict) and body["param"] == "model"


def test_it_answers_404_for_unknown_paths_and_models(gateway_stack: GatewayStack) -> None:
    url = gateway_stack.gateway.url

    status, answer = raw_request(f"{url}/v1/nothing/here", None, method="GET")
    model_status, model_answer = raw_request(f"{url}/v1/models/nope", None, method="GET")

    assert status == 404
    assert_openai_error(answer, 404)
    assert model_status == 404
    assert "nope" in assert_openai_error(model_answer, 404)["message"]


def test_it_answers_405_for_the_wrong_method(gateway_stack: GatewayStack) -> None:
    url = gateway_stack.gateway.url

    status, answer = raw_request(f"{url}/v1/chat/completions", None, method="GET")
    models_status, models_answer = raw_request(f"{url}/v1/models", b"{}", method="POST")

    assert (status, models_status) == (405, 405)
    assert_openai_error(answer, 405)
    assert_openai_error(models_answer, 405)


def test_it_answers_413_for_a_body_over_the_limit(gateway_stack: GatewayStack) -> None:
    padding = "x" * MAX_BODY
    body = json.dumps({"model": "chat", "prompt": padding}).encode()

    status, answer = raw_request(f"{gateway_stack.gateway.url}/v1/completions", body)

    assert status == 413
    assert_openai_error(answer, 413)


def test_it_answers_413_for_a_chunked_body_over_the_limit(gateway_stack: GatewayStack) -> None:
    # No Content-Length to refuse early: the limit is enforced while reading.
    chunk = b"x" * 16384
    with socket.create_connection(("127.0.0.1", gateway_stack.gateway.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\nConnection: close\r\n\r\n"
        )
        for _ in range(MAX_BODY // len(chunk) + 2):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
        reply = b""
        while data := sock.recv(65536):
            reply += data

    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b'"code": 413' in body


def test_it_answers_503_with_the_reason_when_the_switch_fails(gateway_stack: GatewayStack) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        gateway_stack.gateway.client().completions.create(model="broken", prompt="hi")

    assert caught.value.status_code == 503
    assert "ran out of GPU memory while loading" in caught.value.message
    assert gateway_stack.gateway.counts()["broken"]["acquired"] == 0


def test_it_answers_504_when_the_model_is_not_ready_in_time(gateway_stack: GatewayStack) -> None:
    started = time.monotonic()

    with pytest.raises(openai.InternalServerError) as caught:
        gateway_stack.gateway.client().completions.create(model="stuck", prompt="hi")

    assert caught.value.status_code == 504
    assert "stuck" in caught.value.message
    assert REQUEST_TIMEOUT - 0.1 <= time.monotonic() - started < REQUEST_TIMEOUT + 2


def test_it_answers_502_when_the_engine_refuses_the_connection(
    gateway_stack: GatewayStack,
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        gateway_stack.gateway.client().completions.create(model="gone", prompt="hi")

    assert caught.value.status_code == 502
    assert caught.value.body is not None
    counts = gateway_stack.gateway.counts()["gone"]
    assert counts["acquired"] == counts["released"] == 1


def test_it_passes_engine_errors_through_unchanged(gateway_stack: GatewayStack) -> None:
    body = {"model": "sim/tcp", "prompt": "hi", "max_tokens": -1}
    direct = raw_request(f"{gateway_stack.tcp.base_url}/v1/completions", json.dumps(body).encode())

    via_gateway = raw_request(
        f"{gateway_stack.gateway.url}/v1/completions", json.dumps(body).encode()
    )

    assert via_gateway == direct
    assert direct[0] == 400
    assert_openai_error(direct[1], 400)


def test_it_puts_engine_errors_that_are_not_openai_shaped_into_that_shape(
    start_gateway: GatewayLauncher, echo_upstream: EchoUpstream
) -> None:
    at_echo = {"port": echo_upstream.port}
    gateway = start_gateway(
        [{"name": "fail-plain", "upstream": at_echo}, {"name": "fail-detail", "upstream": at_echo}]
    )
    url = f"{gateway.url}/v1/completions"

    plain_status, plain = raw_request(url, b'{"model": "fail-plain", "prompt": "hi"}')
    detail_status, detail = raw_request(url, b'{"model": "fail-detail", "prompt": "hi"}')

    assert plain_status == 500
    assert assert_openai_error(plain, 500)["message"] == "Internal Server Error"
    assert detail_status == 404
    assert assert_openai_error(detail, 404)["message"] == "Not Found"


# Every status the gateway or its web server answers, with the class the openai package
# raises for it where it has one (the error's `type` names that class, as vLLM does).
STATUS_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    408: "RequestTimeoutError",
    409: "ConflictError",
    413: "RequestEntityTooLargeError",
    415: "UnsupportedMediaTypeError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    431: "RequestHeaderFieldsTooLargeError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}


@pytest.mark.parametrize(("status", "expected"), sorted(STATUS_TYPES.items()))
def test_each_status_has_its_own_error_type(status: int, expected: str) -> None:
    error = json.loads(GatewayError(status, "why").body())["error"]

    assert error["type"] == expected
    if status < 500 and status not in (405, 408, 413, 415, 431):
        assert expected in dir(openai)  # the client's own exception class for it
