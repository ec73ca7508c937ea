"""The web server adopts a listening socket it is given, in that socket's own family.

`llmux serve` binds one socket per web process and passes it with daphne's `--fd`
(llmux_site/serve.py); Twisted's `fd:` endpoint alone would adopt an IPv6 socket as IPv4.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import socket
import subprocess
import sys

import pytest

from llmux_site.serve import READY_FD_VARIABLE, ServeError, web_process_count
from tests.gateway.conftest import REPO_ROOT, WEB_SERVER

# Answers with the client and server addresses daphne put in the scope.
ECHO_ADDRESSES = "tests.gateway.client_address_app:application"


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")]
)
def test_a_passed_socket_is_served_and_the_parent_hears_when(
    family: socket.AddressFamily, host: str
) -> None:
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    ready, ready_w = os.pipe()
    env = os.environ | {READY_FD_VARIABLE: str(ready_w)}
    argv = [sys.executable, *WEB_SERVER, "--fd", str(listener.fileno()), ECHO_ADDRESSES]
    process = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, pass_fds=[listener.fileno(), ready_w], start_new_session=True
    )
    listener.close()
    os.close(ready_w)
    try:
        assert select.select([ready], [], [], 60)[0], "the web server never said it listens"
        assert os.read(ready, 8) == b"."
        connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.request("GET", "/")
        reply = connection.getresponse()
        assert reply.status == 200
        seen = json.loads(reply.read())
        # Read in the socket's own family: an IPv6 socket adopted as IPv4 garbles both.
        assert seen["client"] == [host, connection.sock.getsockname()[1]]
        assert seen["server"] == [host, port]
    finally:
        os.close(ready)
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    ("requested", "cpus", "expected"),
    [
        ("auto", 2, 1),
        ("auto", 8, 2),
        ("auto", 16, 4),
        ("auto", 128, 4),
        ("auto", None, 1),
        ("3", 2, 3),
        ("1", 64, 1),
    ],
)
def test_how_many_web_processes(requested: str, cpus: int | None, expected: int) -> None:
    assert web_process_count(requested, cpus) == expected


@pytest.mark.parametrize(
    ("requested", "message"),
    [("0", "at least 1, got 0"), ("many", "expected a number or 'auto', got 'many'")],
)
def test_a_web_process_count_that_cannot_work_is_refused(requested: str, message: str) -> None:
    with pytest.raises(ServeError, match=message):
        web_process_count(requested, 16)
