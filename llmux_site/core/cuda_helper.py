"""The long-lived CUDA suspend helper (used by `process_actions.HostProcessActions`).

The driver's checkpoint calls need an initialised driver in the calling process
(`cuInit`, hundreds of milliseconds), and CUDA must never be initialised in a process
that forks (the worker's task processes are forked). So one helper process holds the
driver for its whole life and takes requests as JSON lines:
`{"op": "suspend" | "resume", "pids": [...]}` → `{"ok": true, "pids": [...]}` or
`{"ok": false, "error": "..."}`. Under `llmux worker` the host's engine owner starts the
one helper of the host, serving a Unix socket (`--socket`) that every worker process
uses (`SocketHelper`); elsewhere a process starts its own on stdin/stdout
(`HelperProcess`).

    python -m llmux_site.core.cuda_helper [--binary /path/to/cuda-checkpoint] [--socket PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO, Protocol

from llmux_site.core import cuda_suspend
from llmux_site.core.cuda_suspend import CheckpointDriver, CudaSuspendError

__all__ = ["HelperProcess", "InProcess", "SocketHelper", "SuspendHelper", "serve", "serve_socket"]

SOCKET_TIMEOUT = 600.0  # a suspend of a large engine takes seconds; never minutes


def handle(driver: CheckpointDriver, request: dict[str, object]) -> dict[str, object]:
    """One request to the helper; never raises."""
    op, pids = request.get("op"), request.get("pids")
    if not isinstance(pids, list) or not all(isinstance(p, int) for p in pids):
        return {"ok": False, "error": "pids must be a list of integers"}
    try:
        if op == "suspend":
            return {"ok": True, "pids": cuda_suspend.suspend_tree(driver, pids)}
        if op == "resume":
            return {"ok": True, "pids": cuda_suspend.resume_tree(driver, pids)}
    except Exception as exc:  # reported to the worker, which escalates
        return {"ok": False, "error": str(exc) or type(exc).__name__}
    return {"ok": False, "error": f"unknown op {op!r}"}


def _reply(driver: CheckpointDriver, line: str | bytes) -> str:
    """The JSON line answering one request line."""
    try:
        request = json.loads(line)
    except ValueError:
        request = None
    reply = (
        handle(driver, request)
        if isinstance(request, dict)
        else {"ok": False, "error": "each request is one JSON object per line"}
    )
    return json.dumps(reply) + "\n"


def serve(driver: CheckpointDriver, requests: IO[str], replies: IO[str]) -> None:
    """Answer JSON-line requests until stdin closes (the worker exited)."""
    for line in requests:
        replies.write(_reply(driver, line))
        replies.flush()


def serve_socket(driver: CheckpointDriver, path: str) -> None:
    """Answer JSON-line requests on a Unix socket only its user may use, one at a time."""
    lock = threading.Lock()  # the driver is called by one request at a time

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                with lock:
                    answer = _reply(driver, line)
                self.wfile.write(answer.encode())

    if os.path.exists(path):
        os.unlink(path)
    old_umask = os.umask(0o077)
    try:
        server = socketserver.ThreadingUnixStreamServer(path, Handler)
    finally:
        os.umask(old_umask)
    server.daemon_threads = True
    server.serve_forever()


class SuspendHelper(Protocol):
    """Runs a suspend or resume of some pids somewhere; the pids it acted on."""

    def call(self, op: str, pids: Sequence[int]) -> list[int]: ...


class InProcess:
    """A `SuspendHelper` that calls the driver in this very process."""

    def __init__(self, driver: CheckpointDriver) -> None:
        self.driver = driver

    def call(self, op: str, pids: Sequence[int]) -> list[int]:
        return _answer(handle(self.driver, {"op": op, "pids": list(pids)}))


class HelperProcess:
    """A `SuspendHelper` in a child process, started on first use and again if it died."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()  # one request at a time on the pipes

    def _started(self) -> subprocess.Popen[str]:
        if self._process is None or self._process.poll() is not None:
            argv = [sys.executable, "-m", "llmux_site.core.cuda_helper"]
            if self.binary:
                argv += ["--binary", self.binary]
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        return self._process

    def call(self, op: str, pids: Sequence[int]) -> list[int]:
        with self._lock:
            process = self._started()
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(json.dumps({"op": op, "pids": list(pids)}) + "\n")
                process.stdin.flush()
                line = process.stdout.readline()
            except OSError as exc:
                raise CudaSuspendError(f"the CUDA helper is gone: {exc}") from exc
            if not line:
                code = process.wait()
                raise CudaSuspendError(f"the CUDA helper exited with status {code}")
            return _answer(json.loads(line))

    def close(self) -> None:
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                assert self._process.stdin is not None
                self._process.stdin.close()
                self._process.wait(timeout=10)
            self._process = None


class SocketHelper:
    """A `SuspendHelper` that asks the host's one helper over its Unix socket."""

    def __init__(self, path: str) -> None:
        self.path = path

    def call(self, op: str, pids: Sequence[int]) -> list[int]:
        request = json.dumps({"op": op, "pids": list(pids)}) + "\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(SOCKET_TIMEOUT)
                conn.connect(self.path)
                conn.sendall(request.encode())
                conn.shutdown(socket.SHUT_WR)
                line = conn.makefile("rb").readline()
        except OSError as exc:
            raise CudaSuspendError(f"the host's CUDA helper did not answer: {exc}") from exc
        if not line:
            raise CudaSuspendError("the host's CUDA helper closed the connection")
        return _answer(json.loads(line))


def _answer(reply: object) -> list[int]:
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else reply
        raise CudaSuspendError(str(error))
    return [int(pid) for pid in reply.get("pids", [])]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="llmux's CUDA suspend helper")
    parser.add_argument("--binary", help="use this cuda-checkpoint instead of the driver API")
    parser.add_argument("--socket", help="serve this Unix socket instead of stdin/stdout")
    args = parser.parse_args(argv)
    driver: CheckpointDriver
    try:
        if args.binary:
            driver = cuda_suspend.CheckpointBinary(args.binary)
        else:
            driver = cuda_suspend.DriverApi()
    except Exception as exc:  # no driver here: say so on every request
        driver = _Missing(f"no CUDA driver: {exc}")
    if args.socket:
        serve_socket(driver, args.socket)
    else:
        serve(driver, sys.stdin, sys.stdout)


class _Missing:
    """The driver of a host without one: every call fails, saying why."""

    def __init__(self, error: str) -> None:
        self.error = error

    def state(self, pid: int) -> str | None:
        raise CudaSuspendError(self.error)

    def lock(self, pid: int, timeout_ms: int) -> None:
        raise CudaSuspendError(self.error)

    def checkpoint(self, pid: int) -> None:
        raise CudaSuspendError(self.error)

    def restore(self, pid: int) -> None:
        raise CudaSuspendError(self.error)

    def unlock(self, pid: int) -> None:
        raise CudaSuspendError(self.error)


if __name__ == "__main__":
    main()
