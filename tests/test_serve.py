"""`manage.py llmux serve`: web + worker in one command, demo registry, clean stop."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path

import openai
import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int
    lines: list[str]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def password(self) -> str:
        for line in self.lines:
            match = re.search(r"log in as 'admin' with password (\S+)", line)
            if match:
                return match.group(1)
        raise AssertionError(f"no password printed in {self.lines}")


def start_serve(data_dir: Path, port: int, *extra: str) -> Served:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env |= {"LLMUX_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "llmux", "serve", "--port", str(port), *extra],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    served = Served(process, port, [])
    assert process.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        served.lines.append(line.rstrip())
        if "llmux is ready on" in line:
            return served
    process.kill()
    process.wait()
    raise AssertionError("llmux serve did not become ready:\n" + "\n".join(served.lines))


def stop(served: Served) -> int:
    served.process.send_signal(signal.SIGTERM)
    try:
        out, _ = served.process.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.communicate()
        raise
    served.lines.extend(out.splitlines())
    return served.process.returncode


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    instance = start_serve(tmp_path / "data", free_port())
    yield instance
    if instance.process.poll() is None:
        stop(instance)


def login(served: Served) -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    page = opener.open(f"{served.origin}/admin/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": token.group(1),
            "username": "admin",
            "password": served.password(),
            "next": "/admin/",
        }
    ).encode()
    request = urllib.request.Request(
        f"{served.origin}/admin/login/", data=form, headers={"Referer": served.origin}
    )
    response = opener.open(request, timeout=10)
    assert response.geturl().endswith("/admin/"), "login failed"
    return opener


def test_it_serves_the_admin_with_the_demo_registry_and_prints_how_to_log_in(
    served: Served,
) -> None:
    assert any("admin" in line and "/admin/" in line for line in served.lines)
    opener = login(served)
    changelist = opener.open(f"{served.origin}/admin/models_app/modeldefinition/", timeout=10)
    body = changelist.read().decode()
    for name in ("demo-chat", "demo-coder", "demo-reasoner"):
        assert name in body
    overview = opener.open(f"{served.origin}/", timeout=10).read().decode()
    assert "demo-coder" in overview
    static = opener.open(f"{served.origin}/static/admin/css/base.css", timeout=10)
    assert static.status == 200


def test_it_runs_the_web_process_and_the_worker_and_stops_both_on_sigterm(
    served: Served,
) -> None:
    children = psutil.Process(served.process.pid).children(recursive=True)
    commands = [" ".join(child.cmdline()) for child in children]
    assert any("-m llmux_site.webserver" in c for c in commands), commands  # daphne, limited
    assert any("llmux worker" in c for c in commands), commands
    assert stop(served) == 0
    assert any("llmux stopped" in line for line in served.lines)
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def refused_start(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`llmux serve ARGS` that is expected to stop before it serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMUX_")}
    env["LLMUX_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "manage.py", "llmux", "serve", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_refuses_a_port_that_is_already_taken(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = refused_start(tmp_path, "--port", str(port))
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_it_refuses_a_model_on_its_own_port(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "llmux.json"
    config.write_text(
        json.dumps(
            {"vllm_command": "llmux-sim", "models": {"loop": {"model_path": "m", "port": port}}}
        )
    )
    result = refused_start(tmp_path / "data", "--port", str(port), "--config", str(config))
    assert result.returncode != 0
    assert f"model loop listens on port {port}, llmux's own port" in result.stderr


@pytest.mark.timeout(300)  # two full starts and stops; slow when the machine is loaded
def test_a_second_start_keeps_the_registry_and_does_not_print_a_new_password(
    tmp_path: Path,
) -> None:
    first = start_serve(tmp_path, free_port())
    assert stop(first) == 0
    second = start_serve(tmp_path, free_port())
    try:
        assert not any("with password" in line for line in second.lines)
        assert not any("loading the demo registry" in line for line in second.lines)
    finally:
        assert stop(second) == 0


def _drain(served: Served) -> None:
    """Keep reading the server's output so its pipe never fills while the test runs."""
    assert served.process.stdout is not None
    for line in served.process.stdout:
        served.lines.append(line.rstrip())


def _engines_of(served: Served) -> list[psutil.Process]:
    children = psutil.Process(served.process.pid).children(recursive=True)
    return [c for c in children if "demo/chat-small" in " ".join(c.cmdline())]


def test_two_demos_on_one_host_each_run_their_own_engines(tmp_path: Path) -> None:
    """The demo registry's engines listen on sockets of their own data directory: with
    fixed ports the second demo's engine could not bind, or its probe reached the first's."""
    instances: list[Served] = []
    try:
        for name in ("one", "two"):
            instance = start_serve(tmp_path / name, free_port())
            threading.Thread(target=_drain, args=(instance,), daemon=True).start()
            instances.append(instance)
        for instance in instances:
            client = openai.OpenAI(base_url=f"{instance.origin}/v1", api_key="-", timeout=90)
            answer = client.chat.completions.create(
                model="demo-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            assert answer.choices[0].message.content
        for instance in instances:
            (engine,) = _engines_of(instance)  # its own engine, a descendant of its serve
            assert engine.is_running()
    finally:
        for instance in instances:
            stop(instance)
