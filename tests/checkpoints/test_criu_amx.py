"""A restored process keeps the Intel AMX permission it had (scripts/criu/amx_permission.c).

Linux grants AMX's tile state only to a process that asked (arch_prctl
ARCH_REQ_XCOMP_PERM); CRIU does not restore that, so a restored vLLM (its CPU build uses
AMX through oneDNN) died of SIGILL. install-criu.sh preloads a request into criu, whose
restored tasks inherit it. On a CPU without AMX nobody gets it, before or after.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from llmux_site.core import supervisor
from llmux_site.core.criu import Criu
from llmux_site.core.processes import ProcessSpec, spawn

PROGRAM = """
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall(158, 0x1023, 18)  # arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)
while True:
    mask = ctypes.c_uint64(0)
    libc.syscall(158, 0x1022, ctypes.byref(mask))  # ARCH_GET_XCOMP_PERM
    with open(sys.argv[1] + ".tmp", "w") as out:
        out.write(hex(mask.value))
    __import__("os").replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(0.05)
"""


def read_mask(path: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "the process never wrote its permission"
        time.sleep(0.02)
    return path.read_text()


def test_a_restored_process_keeps_its_amx_permission(criu: Criu, short_tmp_dir: Path) -> None:
    report = short_tmp_dir / "mask"
    spec = ProcessSpec(
        argv=[sys.executable, "-c", PROGRAM, str(report)], log_path=short_tmp_dir / "log"
    )
    process = spawn(spec)
    try:
        before = read_mask(report)
        dumped = criu.dump(process, short_tmp_dir / "image")
        report.unlink()
        restored = criu.restore(dumped.images_dir).process
        try:
            after = read_mask(report)
        finally:
            supervisor.stop(restored, grace=1)
    finally:
        supervisor.stop(process, grace=1)
    assert after == before, f"AMX permission {before} before the dump, {after} after the restore"
