"""Run a program with io_uring refused, so CRIU can checkpoint it.

    python -m llmux_site.core.no_io_uring PROGRAM [ARGS...]

CRIU cannot dump an io_uring ("Unknown ... anon_inode:[io_uring]"), and libuv (under
uvloop, which vLLM's API server runs on) opens one even with `UV_USE_IO_URING=0`. libuv
falls back to epoll when `io_uring_setup` fails, so this installs a seccomp filter that
answers that one system call with ENOSYS, for the engine alone (a filter is inherited by
every child and kept across exec), then execs the program. Linux only; pure core.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys
from typing import Final

__all__ = ["COMMAND", "refuse_io_uring"]

COMMAND: Final = (sys.executable, "-m", "llmux_site.core.no_io_uring")

# io_uring_setup has the same number on every Linux architecture (the unified table).
NR_IO_URING_SETUP: Final = 425
PR_SET_NO_NEW_PRIVS: Final = 38
PR_SET_SECCOMP: Final = 22
SECCOMP_MODE_FILTER: Final = 2
SECCOMP_RET_ALLOW: Final = 0x7FFF0000
SECCOMP_RET_ERRNO: Final = 0x00050000
BPF_LD_W_ABS: Final = 0x20  # load the 32-bit word at offset k of seccomp_data
BPF_JEQ_K: Final = 0x15  # jump if equal to k
BPF_RET_K: Final = 0x06  # return k


def _filter() -> bytes:
    """The BPF program: io_uring_setup gets ENOSYS, every other call is allowed."""
    instructions = [
        (BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        (BPF_JEQ_K, 0, 1, NR_IO_URING_SETUP),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    return b"".join(struct.pack("HBBI", *instruction) for instruction in instructions)


def refuse_io_uring() -> None:
    """Install the filter on this process (and so on everything it execs or forks)."""
    libc = ctypes.CDLL(None, use_errno=True)
    program = ctypes.create_string_buffer(_filter())

    class SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    fprog = SockFprog(len(program.raw) // 8, ctypes.addressof(program))
    # No new privileges: what lets an unprivileged process install a filter.
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m llmux_site.core.no_io_uring PROGRAM [ARGS...]")
    refuse_io_uring()
    os.execvp(sys.argv[1], sys.argv[1:])  # noqa: S606 (argv as given, never a shell)


if __name__ == "__main__":
    main()
