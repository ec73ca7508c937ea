"""The host-local bus wakes listeners at once and cleans up after dead ones."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from llmux_site.core.notify import LocalBus


async def test_a_published_message_reaches_every_listener(short_tmp_dir: Path) -> None:
    bus = LocalBus(short_tmp_dir / "bus")
    got: list[tuple[str, bytes]] = []
    first = await bus.listen(lambda m: got.append(("first", m)))
    second = await bus.listen(lambda m: got.append(("second", m)))
    try:
        assert bus.publish(b"runtime") == 2
        for _ in range(50):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        assert sorted(got) == [("first", b"runtime"), ("second", b"runtime")]
    finally:
        first.close()
        second.close()
    assert list((short_tmp_dir / "bus").iterdir()) == []


def test_a_stale_socket_of_a_dead_listener_is_removed(short_tmp_dir: Path) -> None:
    directory = short_tmp_dir / "bus"
    directory.mkdir()
    stale = directory / "123-dead.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(stale))
    sock.close()  # the file stays, nobody listens: like a process killed with -9
    assert LocalBus(directory).publish(b"x") == 0
    assert not stale.exists()


def test_publishing_with_no_directory_is_harmless(tmp_path: Path) -> None:
    assert LocalBus(tmp_path / "missing").publish(b"x") == 0


def test_a_sync_listener_wakes_on_a_message_and_times_out_without_one(
    short_tmp_dir: Path,
) -> None:
    bus = LocalBus(short_tmp_dir / "bus")
    listener = bus.listen_sync()
    try:
        assert listener.wait(0.01) is None
        assert bus.publish(b"queued") == 1
        assert listener.wait(1.0) == b"queued"
    finally:
        listener.close()
    assert not listener.path.exists()


def test_a_sync_listener_can_wait_for_some_kinds_and_skip_the_rest(
    short_tmp_dir: Path,
) -> None:
    bus = LocalBus(short_tmp_dir / "bus")
    listener = bus.listen_sync()
    try:
        bus.publish(b"presence")
        bus.publish(b'runtime {"a":["running",null]}')
        bus.publish(b'wanted {"group":"gpu:0","model":3}')
        got = listener.wait(1.0, only=(b"queued", b"wanted"))
        assert got == b'wanted {"group":"gpu:0","model":3}'
        assert listener.wait(0.05, only=b"queued") is None  # nothing else of that kind
    finally:
        listener.close()
