"""An engine's own files: a stale Unix socket removed before a start, a private TMPDIR.

The fixture engine (tests/fixtures_bin/http_engine.py) behaves like real vLLM here: it
leaves its socket file behind when it dies and cannot bind over one that is there.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmux_site.core import engine_files, lifecycle, processes, supervisor
from llmux_site.core.addresses import ListenAddress
from llmux_site.core.engine_files import EngineFilesError
from llmux_site.core.processes import EngineProcess, ProcessSpec
from llmux_site.core.switching import EngineStatus, EngineTarget
from tests.core.switch_ports import STOP
from tests.fixtures_bin import HTTP_ENGINE
from tests.plugins.engines import wait_http_healthy
from tests.timeouts import ROOMY


def stale_socket(path: Path) -> None:
    """A socket file nobody listens on: what a dead vLLM leaves behind."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


@pytest.fixture
def engines() -> Iterator[list[EngineProcess]]:
    started: list[EngineProcess] = []
    yield started
    for process in started:
        supervisor.stop(process, grace=0.5)


def engine_spec(
    root: Path, listen: Path, *, uds: str | None = None, tmp_dir: str | None = None
) -> ProcessSpec:
    """The fixture engine on `listen`; `uds` and `tmp_dir` are the files llmux manages."""
    return ProcessSpec(
        argv=[sys.executable, str(HTTP_ENGINE), "--uds", str(listen)],
        log_path=root / "engine.log",
        uds=uds,
        tmp_dir=tmp_dir,
    )


def test_a_stale_socket_is_removed_and_a_live_one_kept(short_tmp_dir: Path) -> None:
    stale, live = short_tmp_dir / "stale.sock", short_tmp_dir / "live.sock"
    plain = short_tmp_dir / "file"
    stale_socket(stale)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(live))
    listener.listen()
    plain.write_text("not a socket")
    try:
        assert engine_files.remove_stale_socket(str(stale)) is True
        assert engine_files.remove_stale_socket(str(live)) is False
        assert engine_files.remove_stale_socket(str(plain)) is False
        assert engine_files.remove_stale_socket(str(short_tmp_dir / "absent")) is False
    finally:
        listener.close()
    assert not stale.exists()
    assert stat.S_ISSOCK(live.lstat().st_mode)
    assert plain.read_text() == "not a socket"


async def test_an_engine_starts_over_the_socket_a_dead_one_left(
    short_tmp_dir: Path, engines: list[EngineProcess]
) -> None:
    uds = short_tmp_dir / "e.sock"
    stale_socket(uds)

    process = processes.spawn(engine_spec(short_tmp_dir, uds, uds=str(uds)))
    engines.append(process)

    await wait_http_healthy(process, ListenAddress.unix(str(uds)), timeout=10)


async def test_an_engine_gets_an_empty_private_tmpdir(
    short_tmp_dir: Path, engines: list[EngineProcess]
) -> None:
    tmp_dir = short_tmp_dir / "run" / "tmp" / "abc"
    tmp_dir.mkdir(parents=True)
    (tmp_dir / "vllm_dist_0123").write_text("an earlier run's file")
    (tmp_dir / "torchinductor_root").mkdir()
    uds = short_tmp_dir / "e.sock"

    process = processes.spawn(engine_spec(short_tmp_dir, uds, tmp_dir=str(tmp_dir)))
    engines.append(process)

    assert os.listdir(tmp_dir) == []
    assert stat.S_IMODE(tmp_dir.stat().st_mode) == 0o700
    environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
    assert f"TMPDIR={tmp_dir}".encode() in environ


def test_a_tmpdir_path_that_is_not_a_directory_is_refused(short_tmp_dir: Path) -> None:
    target = short_tmp_dir / "elsewhere"
    target.mkdir()
    link = short_tmp_dir / "link"
    link.symlink_to(target)

    with pytest.raises(EngineFilesError):
        engine_files.prepare_private_tmp(str(link))
    engine_files.remove_private_tmp(str(link))

    assert target.is_dir()  # a link is never followed


async def test_a_stop_eviction_removes_the_socket_and_the_tmpdir(short_tmp_dir: Path) -> None:
    uds = short_tmp_dir / "e.sock"
    tmp_dir = short_tmp_dir / "tmp" / "e"
    target = EngineTarget(
        name="m/http",
        address=ListenAddress.unix(str(uds)),
        served_name="m/http",
        spec=engine_spec(short_tmp_dir, uds, uds=str(uds), tmp_dir=str(tmp_dir)),
        eviction=STOP,
        status=EngineStatus.NOT_STARTED,
    )
    process = await lifecycle.cold_start(target, timeouts=ROOMY)
    try:
        (tmp_dir / "vllm_dist_0123").write_text("written by the engine")

        outcome = await lifecycle.evict(
            target, process, memory_probe=lambda pids: None, stop_grace=2.0, timeouts=ROOMY
        )
    finally:
        supervisor.stop(process, grace=0.5)

    assert (outcome.escalated, outcome.status) == (False, EngineStatus.STOPPED)
    assert not uds.exists()
    assert not tmp_dir.exists()


def test_a_private_root_is_made_0700_and_one_of_another_user_is_refused(
    short_tmp_dir: Path,
) -> None:
    root = short_tmp_dir / "root"
    engine_files.private_root(str(root))
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    engine_files.private_root(str(root))  # again: still fine

    elsewhere = short_tmp_dir / "elsewhere"
    elsewhere.mkdir()
    planted = short_tmp_dir / "planted"
    planted.symlink_to(elsewhere)  # what another user could leave in /tmp
    with pytest.raises(EngineFilesError, match="not a directory of this user's own"):
        engine_files.private_root(str(planted))

    foreign = short_tmp_dir / "foreign"
    foreign.mkdir()
    os.chown(foreign, 65534, 65534)  # nobody's (the tests run as root)
    with pytest.raises(EngineFilesError, match="not a directory of this user's own"):
        engine_files.private_root(str(foreign))


def test_a_restore_finds_its_tmpdir_again_with_what_it_left_there(short_tmp_dir: Path) -> None:
    tmp_dir = short_tmp_dir / "tmp" / "e"
    engine_files.ensure_private_tmp(str(tmp_dir))  # a stop removed it: made again
    assert stat.S_IMODE(tmp_dir.stat().st_mode) == 0o700
    (tmp_dir / "ipc-socket").write_text("the engine's")
    engine_files.ensure_private_tmp(str(tmp_dir))
    assert (tmp_dir / "ipc-socket").read_text() == "the engine's"  # never emptied
