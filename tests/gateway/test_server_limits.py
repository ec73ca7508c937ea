"""The web server refuses what it must before a request's body is read, and slow clients.

Raw sockets against the web server of llmux (``python -m llmux_site.webserver``) serving
the test gateway: a body too large for the limit is refused as soon as its length is
known (or, chunked, as soon as it passes the limit), an oversized request line or header
section is a 431, and a client that is too slow with its headers or its body gets a 408.
Every such answer is JSON in OpenAI's shape, and the server goes on serving others.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from typing import Any

import pytest

from tests.gateway.conftest import MAX_BODY, EchoUpstream, Gateway, GatewayLauncher

DEADLINE_ENV = {"LLMUX_HEADER_TIMEOUT_SECS": "1", "LLMUX_BODY_TIMEOUT_SECS": "1"}
# Long enough that only a server that never answers makes a test fail on it.
WAIT = 15.0
HEAD = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@pytest.fixture
def gateway(start_gateway: GatewayLauncher, echo_upstream: EchoUpstream) -> Gateway:
    return start_gateway(
        [{"name": "m", "upstream": {"port": echo_upstream.port}}], env=DEADLINE_ENV
    )


def converse(gateway: Gateway, *parts: bytes) -> bytes:
    """Send ``parts`` on one connection, then read until the server closes it."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=WAIT) as sock:
        for part in parts:
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server has answered and stopped listening: read the answer
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    return reply


def error_answer(reply: bytes, status: int) -> dict[str, Any]:
    """The OpenAI-shaped error of a raw HTTP answer with ``status`` (and Connection: close)."""
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith(f"HTTP/1.1 {status} "), reply[:300]
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status
    return error  # type: ignore[no-any-return]


def still_serving(gateway: Gateway) -> bool:
    with urllib.request.urlopen(f"{gateway.url}/v1/models", timeout=WAIT) as reply:
        return reply.status == 200 and json.loads(reply.read())["data"][0]["id"] == "m"


def test_it_refuses_a_too_large_content_length_before_the_body_arrives(gateway: Gateway) -> None:
    # 100 MiB announced, two bytes sent: the answer must not wait for the rest.
    reply = converse(gateway, HEAD + b"Content-Length: 104857600\r\n\r\n{}")

    error = error_answer(reply, 413)
    assert error["type"] == "RequestEntityTooLargeError"
    assert str(MAX_BODY) in error["message"]
    assert still_serving(gateway)


def test_it_answers_an_expect_continue_with_413_instead_of_100(gateway: Gateway) -> None:
    reply = converse(
        gateway, HEAD + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)
    )

    assert not reply.startswith(b"HTTP/1.1 100")
    error_answer(reply, 413)


def test_it_refuses_any_path_with_a_too_large_body(gateway: Gateway) -> None:
    put = b"PUT /not/the/gateway HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n"

    reply = converse(gateway, put + b"\r\n")

    error_answer(reply, 413)


def test_it_stops_reading_a_chunked_body_at_the_limit(gateway: Gateway) -> None:
    chunk = b"x" * 16384
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BODY // len(chunk) + 2)

    # The body never ends: only a server that stops at the limit answers at all.
    reply = converse(gateway, HEAD + b"Transfer-Encoding: chunked\r\n\r\n", *chunks)

    error_answer(reply, 413)
    assert still_serving(gateway)


@pytest.mark.parametrize(
    ("name", "request_head"),
    [
        ("one long header", HEAD + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n"),
        ("many headers", HEAD + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 90) for i in range(200))),
        ("a long request line", b"GET /v1/models?" + b"q" * 20000 + b" HTTP/1.1\r\n\r\n"),
    ],
)
def test_it_answers_431_to_an_oversized_request_head(
    gateway: Gateway, name: str, request_head: bytes
) -> None:
    reply = converse(gateway, request_head)

    assert error_answer(reply, 431)["type"] == "RequestHeaderFieldsTooLargeError", name
    assert still_serving(gateway)


def test_it_answers_408_to_headers_that_do_not_arrive_in_time(gateway: Gateway) -> None:
    reply = converse(gateway, b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    assert error_answer(reply, 408)["type"] == "RequestTimeoutError"
    assert still_serving(gateway)


def test_it_answers_408_to_a_body_that_does_not_arrive_in_time(gateway: Gateway) -> None:
    reply = converse(gateway, HEAD + b"Content-Length: 100\r\n\r\n" + b'{"model": "m"')

    error_answer(reply, 408)
    assert still_serving(gateway)


def test_a_keep_alive_connection_is_not_timed_out_between_requests(gateway: Gateway) -> None:
    # The header deadline runs from a request's first byte, not from the last answer.
    get = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=WAIT) as sock:
        sock.sendall(get)
        first = sock.recv(65536)
        sock.settimeout(2.5)  # longer than both deadlines: an idle connection stays open
        with pytest.raises(TimeoutError):
            sock.recv(65536)
        sock.settimeout(WAIT)
        sock.sendall(get)
        second = sock.recv(65536)

    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")
