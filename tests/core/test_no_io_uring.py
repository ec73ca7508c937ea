"""Engines to be checkpointed run with io_uring refused (CRIU cannot dump one)."""

from __future__ import annotations

import subprocess
import sys

from llmux_site.core.addresses import ListenAddress
from llmux_site.core.launch import build_engine_command
from llmux_site.core.no_io_uring import COMMAND

PROBE = """
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 8, params)  # io_uring_setup
print(fd, errno.errorcode.get(ctypes.get_errno(), "") if fd < 0 else "")
if fd < 0:
    child = os.fork()
    if child == 0:  # what the engine's children (vLLM's engine core, workers) get
        os._exit(0 if libc.syscall(425, 8, params) < 0 else 1)
    print(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
"""


def run(argv: list[str]) -> list[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.split()


def test_io_uring_setup_is_refused_with_enosys_in_the_engine_and_its_children() -> None:
    assert run([*COMMAND, sys.executable, "-c", PROBE]) == ["-1", "ENOSYS", "0"]


def test_without_the_filter_this_machine_opens_an_io_uring() -> None:
    fd, *_ = run([sys.executable, "-c", PROBE])
    assert int(fd) >= 0  # so the test above would fail without the filter


def test_an_engine_that_may_be_checkpointed_is_started_under_the_filter() -> None:
    address = ListenAddress.unix("/tmp/e.sock")
    plain = build_engine_command("simulator", model_path="m", address=address)
    criu = build_engine_command("simulator", model_path="m", address=address, criu_compatible=True)
    assert criu.argv == [*COMMAND, *plain.argv]
    assert plain.argv[: len(COMMAND)] != list(COMMAND)
