"""`llmux serve`: the web process (daphne) and the worker (qcluster) as one command.

The two run as child processes so that each keeps its own event loop and signal handling;
this parent only prepares the database, starts them, reports where llmux listens and, on
Ctrl-C or SIGTERM, stops both (and then the engines, unless told to keep them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

STOP_GRACE_SECS = 20.0
ASGI_APP = "llmux_site.asgi:application"
# daphne with request limits enforced before a body is read (LLMUX_MAX_BODY_BYTES, the
# header and body deadlines); it takes daphne's own options.
WEB_SERVER = "llmux_site.webserver"
# Twisted listens with a backlog of 50 unless told otherwise. A burst of more new client
# connections than that while the reactor is busy overflows the accept queue, and the
# kernel resets some of them ("connection reset by peer" for ~10 % of 300 clients that
# connect at once in the fuzz tests). The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 4096


class ServeError(RuntimeError):
    """llmux serve cannot start or one of its processes died."""


@dataclass
class ChildProcess:
    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        # stdin from /dev/null: neither child reads the terminal. Each child leads a process
        # group of its own, so a stop can end its whole tree (the worker's task processes
        # too) and no orphan keeps running; Ctrl-C reaches the children through Runner,
        # which forwards it as SIGTERM.
        self.popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )

    def kill_group(self) -> None:
        """SIGKILL whatever is left of this child's process group (after it stopped)."""
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)

    def exited(self) -> int | None:
        return None if self.popen is None else self.popen.poll()


@dataclass
class Runner:
    host: str
    port: int
    say: Callable[[str], None]
    children: list[ChildProcess] = field(default_factory=list)
    before_stop: Callable[[], None] = lambda: None  # e.g. end the worker's long tasks
    stopping: bool = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self, env: dict[str, str]) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for child in self.children:
                child.start(env)
            self._wait_listening()
            if not self.stopping:
                self.say(f"llmux is ready on http://{_url_host(self.host)}:{self.port}/")
            return self._supervise()
        finally:
            self._stop_children()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.stopping and time.monotonic() < deadline:
            for child in self.children:
                if child.exited() is not None:
                    raise ServeError(f"{child.name} exited during start-up ({child.exited()})")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.5),
            ):
                return
            time.sleep(0.1)
        if not self.stopping:
            raise ServeError(f"the web process did not listen on {self.host}:{self.port} in time")

    def _supervise(self) -> int:
        while not self.stopping:
            for child in self.children:
                code = child.exited()
                if code is not None:
                    self.say(f"{child.name} exited unexpectedly with status {code}; stopping")
                    return 1
            time.sleep(0.2)
        self.say("stopping llmux ...")
        return 0

    def _stop_children(self) -> None:
        self.before_stop()
        live = [c for c in self.children if c.popen is not None and c.exited() is None]
        for child in live:
            assert child.popen is not None
            with contextlib.suppress(ProcessLookupError):
                child.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECS
        for child in live:
            assert child.popen is not None
            try:
                child.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{child.name} did not stop in {STOP_GRACE_SECS:.0f}s; killing it")
                child.popen.kill()
                child.popen.wait()
        for child in self.children:
            child.kill_group()  # leftovers of a killed child; engines have their own sessions


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def child_processes(host: str, port: int) -> list[ChildProcess]:
    python = sys.executable
    return [
        ChildProcess(
            "web",
            # -v 0: no access-log line per request on the hot path.
            [python, "-m", WEB_SERVER, "-v", "0", "-e", daphne_endpoint(host, port), ASGI_APP],
        ),
        ChildProcess("worker", [python, "-m", "django", "llmux", "worker"]),
    ]


def daphne_endpoint(host: str, port: int) -> str:
    """Daphne's `-b HOST -p PORT` as a Twisted endpoint string, with our listen backlog."""
    interface = host.strip("[]").replace(":", r"\:")
    return f"tcp:port={port}:interface={interface}:backlog={LISTEN_BACKLOG}"


def child_env(host: str = "127.0.0.1", port: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "llmux_site.settings")
    env["PYTHONUNBUFFERED"] = "1"
    # The web process decides whether /v1/ needs an API key by the address it serves on,
    # and refuses a model definition that would take llmux's own port.
    env["LLMUX_BIND_HOST"] = host
    if port is not None:
        env["LLMUX_BIND_PORT"] = str(port)
    return env


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
