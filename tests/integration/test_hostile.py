"""A hostile corpus against /v1/ of a running llmux: each a clean 4xx, nothing written,
and the server keeps serving other clients (a slow client included).

The body requests name `beta`, which is not active: one that got through would switch.
"""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.harness import Llmux, new_llmux, sim_model
from tests.plugins.engines import free_port

CHAT = "/v1/chat/completions"
BETA = b'{"model": "beta", "messages": [{"role": "user", "content": "hi"}]}'
LORA = b'{"model": "beta", "lora_name": "evil", "lora_path": "/tmp/evil"}'
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
CORPUS: list[tuple[str, str, bytes, dict[str, str | None]]] = [
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
    # A page on another site, or one reached by DNS rebinding, names its own host.
    ("foreign Host", CHAT, BETA, {"Host": "evil.example"}),
    ("rebinding Host", CHAT, BETA, {"Host": "attacker.example:8000"}),
    # A browser's "simple" cross-site POST: no preflight, so no JSON Content-Type.
    ("text/plain body", CHAT, BETA, {"Content-Type": "text/plain"}),
    ("form body", CHAT, BETA, {"Content-Type": "application/x-www-form-urlencoded"}),
    ("no Content-Type", CHAT, BETA, {"Content-Type": None}),
    # vLLM's administrative routes act on the engine itself.
    ("engine LoRA loading", "/v1/load_lora_adapter", LORA, {}),
    ("engine LoRA unloading", "/v1/unload_lora_adapter", LORA, {}),
    ("engine RPC", "/v1/collective_rpc", b'{"model": "beta", "method": "x"}', {}),
    ("dot segments", "/v1/chat/completions/../../load_lora_adapter", LORA, {}),
]


def config() -> dict[str, Any]:
    return {
        "vllm_command": "llmux-sim",
        "policy": {"min_active_secs": 0},
        "models": {"alpha": sim_model(free_port()), "beta": sim_model(free_port())},
    }


def post(
    server: Llmux, path: str, body: bytes, headers: dict[str, str | None]
) -> tuple[int, bytes]:
    """A POST with JSON's Content-Type unless ``headers`` change it (None: leave it out)."""
    merged = {"Content-Type": "application/json", **headers}
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(
            "POST", path, body=body, headers={k: v for k, v in merged.items() if v is not None}
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


def exchange(server: Llmux, head: bytes, parts: Iterable[bytes] = ()) -> bytes:
    """Send ``head``, then ``parts`` from a thread while the answer is read (a server that
    answers early stops reading, and a reset must not lose that answer); until closed."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)

        def send_rest() -> None:
            try:
                for part in parts:
                    sock.sendall(part)
            except OSError:
                pass  # the server stopped listening: its answer is what counts

        sender = threading.Thread(target=send_rest, daemon=True)
        sender.start()
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
        sender.join(30)
    return reply


def refused(reply: bytes, status: int) -> dict[str, Any]:
    """The OpenAI-shaped error of a raw answer that must carry ``status``."""
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), reply[:300]
    error = json.loads(body)["error"]
    assert error["message"] and error["code"] == status
    return error  # type: ignore[no-any-return]


HEAD = f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    ("name", "request_head"),
    [
        ("oversized header", HEAD + "X-Padding: " + "p" * 20000 + "\r\n\r\n"),
        ("oversized request line", f"GET /v1/models?{'q' * 20000} HTTP/1.1\r\n\r\n"),
    ],
)
def test_an_oversized_request_head_is_a_431(running: Llmux, name: str, request_head: str) -> None:
    before = recorded(running)

    refused(exchange(running, request_head.encode()), 431)

    assert recorded(running) == before, name
    assert ask(running, "alpha")


def test_a_huge_content_length_is_refused_before_its_body(running: Llmux) -> None:
    before = recorded(running)

    # 100 MiB announced, a few bytes sent: the answer comes without waiting for the rest.
    reply = exchange(running, (HEAD + "Content-Length: 104857600\r\n\r\n").encode() + BETA[:9])

    assert refused(reply, 413)["type"] == "RequestEntityTooLargeError"
    assert recorded(running) == before
    assert ask(running, "alpha")


def web_process(server: Llmux) -> psutil.Process:
    assert server.process is not None
    children = psutil.Process(server.process.pid).children(recursive=True)
    return next(c for c in children if "llmux_site.asgi:application" in " ".join(c.cmdline()))


def peak_rss(process: psutil.Process) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    status = Path(f"/proc/{process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_a_chunked_body_over_the_limit_is_refused_without_being_held(running: Llmux) -> None:
    web = web_process(running)
    Path(f"/proc/{web.pid}/clear_refs").write_text("5")  # the peak starts from now
    before, peak_before = recorded(running), peak_rss(web)
    frame = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    body = itertools.chain(itertools.repeat(frame, 96 * 16), [b"0\r\n\r\n"])  # 96 MiB

    reply = exchange(running, (HEAD + "Transfer-Encoding: chunked\r\n\r\n").encode(), body)

    refused(reply, 413)
    # Read up to the limit (8 MiB) at most, never the whole body, nor into memory.
    assert peak_rss(web) - peak_before < 32 * 1024 * 1024
    assert recorded(running) == before
    assert ask(running, "alpha")


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[Llmux]:
    """A running llmux whose clients have a second for their headers and their body."""
    server = new_llmux(tmp_path)
    deadlines = {"LLMUX_HEADER_TIMEOUT_SECS": "1", "LLMUX_BODY_TIMEOUT_SECS": "1"}
    try:
        server.start(config(), env=deadlines)
        assert ask(server, "alpha")
        yield server
    finally:
        server.stop()


def test_slow_headers_and_a_slow_body_get_408(impatient: Llmux) -> None:
    before = recorded(impatient)

    headers = exchange(impatient, f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
    body = exchange(impatient, (HEAD + "Content-Length: 200\r\n\r\n").encode() + BETA[:20])

    assert refused(headers, 408)["type"] == refused(body, 408)["type"] == "RequestTimeoutError"
    assert recorded(impatient) == before
    assert ask(impatient, "alpha")


def get(server: Llmux, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_with_keys_required_no_model_name_is_confirmed_without_a_key(llmux: Llmux) -> None:
    llmux.start(config(), env={"LLMUX_REQUIRE_API_KEY": "on"})
    before = recorded(llmux)

    answers = [
        get(llmux, "/v1/models"),
        get(llmux, "/v1/models/alpha"),
        get(llmux, "/v1/models/nope"),
        post(llmux, CHAT, b'{"model": "nope", "messages": []}', {}),
        post(llmux, CHAT, BETA, {}),
    ]

    assert {status for status, _ in answers} == {401}
    assert len({body for _, body in answers}) == 1  # known or not, the same answer
    assert recorded(llmux) == before
