"""A hostile corpus against /v1/ of a running llmux: each a clean 4xx, nothing written,
and the server keeps serving other clients (a slow client included)."""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any

import pytest

from tests.integration.harness import Llmux, sim_model
from tests.plugins.engines import free_port

CHAT = "/v1/chat/completions"
DEEP = (
    b'{"model":"alpha","messages":[{"role":"user","content":"x","x":'
    + b"[" * 5000
    + b"]" * 5000
    + b"}]}"
)
NESTED_100 = (
    b'{"model":"alpha","messages":[{"role":"user","content":"x","x":'
    + b"[" * 100
    + b"]" * 100
    + b"}]}"
)
CORPUS: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("truncated JSON", CHAT, b'{"model": "alpha", "messages": [', {}),
    ("not JSON", CHAT, b"hello there", {}),
    ("invalid UTF-8", CHAT, b'\xff\xfe{"model": "alpha"}', {}),
    ("a JSON array", CHAT, b"[1, 2, 3]", {}),
    ("an empty body", CHAT, b"", {}),
    ("model is a number", CHAT, b'{"model": 5, "messages": []}', {}),
    ("no model", CHAT, b'{"messages": []}', {}),
    ("messages is a string", CHAT, b'{"model": "alpha", "messages": "hi"}', {}),
    ("messages of strings", CHAT, b'{"model": "alpha", "messages": ["hi"]}', {}),
    ("max_tokens is a string", CHAT, b'{"model": "alpha", "messages": [], "max_tokens": "9"}', {}),
    ("stream is a string", CHAT, b'{"model": "alpha", "messages": [], "stream": "yes"}', {}),
    ("temperature is true", CHAT, b'{"model": "alpha", "messages": [], "temperature": true}', {}),
    ("prompt is an object", "/v1/completions", b'{"model": "alpha", "prompt": {}}', {}),
    ("nested 5000 deep", CHAT, DEEP, {}),
    ("nested 100 deep", CHAT, NESTED_100, {}),
    ("lone surrogate model", CHAT, b'{"model": "\\ud800", "messages": []}', {}),
    ("zero-width model", CHAT, '{"model": "al\u200bpha", "messages": []}'.encode(), {}),
    ("NUL in model", CHAT, b'{"model": "alpha\\u0000", "messages": []}', {}),
    ("right-to-left model", CHAT, '{"model": "\u202eahpla", "messages": []}'.encode(), {}),
    ("unknown model", CHAT, b'{"model": "nope", "messages": []}', {}),
    (
        "huge body",
        CHAT,
        b'{"model": "alpha", "messages": [], "x": "' + b"a" * (12 << 20) + b'"}',
        {},
    ),
    ("unknown endpoint", "/v1/nothing/here", b'{"model": "alpha"}', {}),
]


def config() -> dict[str, Any]:
    return {
        "vllm_command": "llmux-sim",
        "policy": {"min_active_secs": 0},
        "models": {"alpha": sim_model(free_port()), "beta": sim_model(free_port())},
    }


def post(server: Llmux, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(
            "POST", path, body=body, headers={"Content-Type": "application/json", **headers}
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def recorded(server: Llmux) -> tuple[Any, ...]:
    return (
        server.query("SELECT count(*) FROM models_app_switchrequest")[0][0],
        server.query("SELECT count(*) FROM models_app_swapevent")[0][0],
        tuple(sorted(server.states().items())),
    )


def ask(server: Llmux, model: str) -> str:
    answer = server.client(timeout=60).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "still there?"}], max_tokens=4
    )
    return answer.choices[0].message.content or ""


@pytest.fixture
def running(llmux: Llmux) -> Llmux:
    llmux.start(config())
    assert ask(llmux, "alpha")  # alpha active: a bad request must not switch anything
    return llmux


def test_each_hostile_request_is_a_clean_4xx_and_nothing_is_written(running: Llmux) -> None:
    before = recorded(running)
    for name, path, body, headers in CORPUS:
        status, answer = post(running, path, body, headers)
        assert 400 <= status < 500, (name, status, answer[:200])
        error = json.loads(answer)["error"]  # OpenAI's shape, every time
        assert error["message"] and "code" in error and "type" in error, name
    assert recorded(running) == before
    assert ask(running, "alpha")  # and it serves normally after


def test_a_slow_client_does_not_hold_up_the_others(running: Llmux) -> None:
    slow = socket.create_connection(("127.0.0.1", running.port), timeout=30)
    try:
        slow.sendall(
            f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n".encode()
            + b'{"model": "al'
        )
        started = time.monotonic()
        for _ in range(5):
            assert ask(running, "alpha")
        assert time.monotonic() - started < 10
        slow.sendall(b'pha"')  # still incomplete; then the client goes away
    finally:
        slow.close()
    assert ask(running, "alpha")
    assert running.states().get("beta", "not_started") == "not_started"  # nothing switched
