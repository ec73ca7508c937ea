"""`llmux serve`: the web processes (daphne) and the worker (qcluster) as one command.

They run as child processes so that each keeps its own event loop and signal handling;
this parent only prepares the database, opens the listening sockets, starts the children,
reports where llmux listens and, on Ctrl-C or SIGTERM, stops them all (and then the
engines, unless told to keep them).

Several web processes share the port through SO_REUSEPORT: the parent binds one socket per
web process and each child adopts its own, so the kernel spreads connections over them
evenly. (One socket shared by all would let whichever process wakes first accept a whole
burst: Twisted accepts up to 100 connections per wake-up, and keep-alive clients then stay
on that one process.) A web process costs about 1.1 ms of CPU per proxied request, mostly
Twisted, daphne and aiohttp (docs/PERFORMANCE.md), so one process tops out near 1,000
requests/s; more processes use more cores.
"""

from __future__ import annotations

import contextlib
import os
import select
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


# A web process writes one byte to this inherited pipe once it listens (ready_signal).
READY_FD_VARIABLE = "LLMUX_WEB_READY_FD"


@dataclass
class ChildProcess:
    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes] | None = None
    listener: socket.socket | None = None  # a web process's own listening socket
    side: list[socket.socket] = field(default_factory=list)  # its admin and metrics ports

    def start(self, env: dict[str, str], ready_fd: int | None = None) -> None:
        # stdin from /dev/null: no child reads the terminal. Each child leads a process
        # group of its own, so a stop can end its whole tree (the worker's task processes
        # too) and no orphan keeps running; Ctrl-C reaches the children through Runner,
        # which forwards it as SIGTERM.
        sockets = [] if self.listener is None else [self.listener, *self.side]
        fds = [s.fileno() for s in sockets]
        if self.listener is not None and ready_fd is not None:
            fds.append(ready_fd)
            env = env | {READY_FD_VARIABLE: str(ready_fd)}
        self.popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, env=env, start_new_session=True, pass_fds=fds
        )
        for held in sockets:
            # The child holds it now; once the child is gone the kernel stops routing
            # connections to a socket nobody accepts on.
            held.close()

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
        ready, ready_w = os.pipe()
        web_processes = sum(child.listener is not None for child in self.children)
        try:
            try:
                for child in self.children:
                    child.start(env, ready_w)
            finally:
                os.close(ready_w)  # the children hold it; EOF once they are all gone
            self._wait_listening(ready, web_processes)
            if not self.stopping:
                self.say(f"llmux is ready on http://{_url_host(self.host)}:{self.port}/")
            return self._supervise()
        finally:
            os.close(ready)
            self._stop_children()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _wait_listening(self, ready: int, web_processes: int, timeout: float = 60.0) -> None:
        """Until every web process said it listens (one byte each on the `ready` pipe)."""
        deadline = time.monotonic() + timeout
        said = 0
        while not self.stopping and said < web_processes and time.monotonic() < deadline:
            for child in self.children:
                if child.exited() is not None:
                    raise ServeError(f"{child.name} exited during start-up ({child.exited()})")
            if select.select([ready], [], [], 0.1)[0]:
                said += len(os.read(ready, web_processes))
        if not self.stopping and said < web_processes:
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


def _bound(host: str, port: int, *, share: bool) -> socket.socket:
    """A socket bound to host:port, or ServeError; `share`: with SO_REUSEPORT, listening
    and inheritable, for one web process of several."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bound = socket.socket(family, socket.SOCK_STREAM)
    try:
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if share:
            bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        bound.bind((host.strip("[]"), port))
        if share:
            bound.listen(LISTEN_BACKLOG)
            bound.set_inheritable(True)
    except OSError as exc:
        bound.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return bound


def check_port_free(host: str, port: int) -> None:
    """Refuse a port in use, before any work. Bound without SO_REUSEPORT on purpose: a
    socket with it would join another program's SO_REUSEPORT listeners of the same user
    and share their connections instead of failing."""
    _bound(host, port, share=False).close()


def web_process_count(requested: str, cpus: int | None) -> int:
    """How many web processes `llmux serve` runs: a number, or `auto`, one per four cores
    and at most four (the worker, the engines and the database want the other cores)."""
    if requested == "auto":
        return max(1, min(4, (cpus or 1) // 4))
    try:
        count = int(requested)
    except ValueError:
        raise ServeError(f"web processes: expected a number or 'auto', got {requested!r}") from None
    if count < 1:
        raise ServeError(f"web processes: at least 1, got {count}")
    return count


def listen(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets listening together on host:port (SO_REUSEPORT), one per web process."""
    listeners: list[socket.socket] = []
    try:
        for _ in range(count):
            listeners.append(_bound(host, port, share=True))
    except ServeError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def side_listeners(ports: list[int], count: int) -> list[list[socket.socket]]:
    """For each of `count` web processes, a loopback socket on each of `ports` (llmux's
    admin_port and metrics_port: llmux_site/side_ports.py)."""
    side: list[list[socket.socket]] = []
    try:
        for _ in range(count):
            side.append([])
            for port in ports:
                side[-1].append(_bound("127.0.0.1", port, share=True))
    except ServeError:
        for held in (s for sockets in side for s in sockets):
            held.close()
        raise
    return side


def child_processes(
    listeners: list[socket.socket], side: list[list[socket.socket]] | None = None
) -> list[ChildProcess]:
    """A web process for each listening socket (with its side ports' sockets), and the
    worker."""
    python = sys.executable
    side = side or [[] for _ in listeners]
    web = [
        ChildProcess(
            "web" if len(listeners) == 1 else f"web {number}",
            # -v 0: no access-log line per request on the hot path.
            [
                *(python, "-m", WEB_SERVER, "-v", "0", "--fd", str(listener.fileno())),
                *(arg for extra in own for arg in ("-e", f"fd:fileno={extra.fileno()}")),
                ASGI_APP,
            ],
            listener=listener,
            side=own,
        )
        for number, (listener, own) in enumerate(zip(listeners, side, strict=True), start=1)
    ]
    return [*web, ChildProcess("worker", [python, "-m", "django", "llmux", "worker"])]


def daphne_endpoint(host: str, port: int) -> str:
    """Daphne's `-b HOST -p PORT` as a Twisted endpoint string, with our listen backlog."""
    interface = host.strip("[]").replace(":", r"\:")
    return f"tcp:port={port}:interface={interface}:backlog={LISTEN_BACKLOG}"


def child_env(
    host: str = "127.0.0.1",
    port: int | None = None,
    web_processes: int = 1,
    *,
    admin_port: int | None = None,
    metrics_port: int | None = None,
) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "llmux_site.settings")
    env["PYTHONUNBUFFERED"] = "1"
    # The web process decides whether /v1/ needs an API key by the address it serves on,
    # and refuses a model definition that would take llmux's own port.
    env["LLMUX_BIND_HOST"] = host
    if port is not None:
        env["LLMUX_BIND_PORT"] = str(port)
    # A web process alone counts keys' windows in its memory (key_table.rate_window).
    env["LLMUX_WEB_PROCESS_COUNT"] = str(web_processes)
    # Which listeners are llmux's admin and metrics ports (llmux_site/side_ports.py).
    for variable, side_port in (
        ("LLMUX_ADMIN_PORT", admin_port),
        ("LLMUX_METRICS_PORT", metrics_port),
    ):
        if side_port is not None:
            env[variable] = str(side_port)
        else:
            env.pop(variable, None)
    return env


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
