"""The bus's hints reach other hosts through the real Redis, once, and never block."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path

import pytest

from llmux_site.core.notify import LocalBus
from llmux_site.core.notify_relay import RedisRelay, origin_of
from tests.plugins.engines import free_port

REDIS = "redis://127.0.0.1:6379/0"


def host(directory: Path, channel: str, url: str = REDIS) -> LocalBus:
    """The bus of one host: its own socket directory, the cluster's channel."""
    relay = RedisRelay(url, channel, origin_of(directory))
    return LocalBus(directory, relay)


def subscribed(bus: LocalBus) -> None:
    assert isinstance(bus.relay, RedisRelay)
    assert bus.relay.wait_subscribed(10), "the relay never subscribed"


@pytest.fixture
def channel() -> str:
    return f"llmux-test-{uuid.uuid4().hex}:notify"  # no other run hears these


async def test_a_message_reaches_the_other_hosts_listeners_and_each_host_once(
    short_tmp_dir: Path, channel: str
) -> None:
    a, b = host(short_tmp_dir / "a", channel), host(short_tmp_dir / "b", channel)
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    on_a = await a.listen(got["a"].append)
    on_b = await b.listen(got["b"].append)
    try:
        subscribed(a)
        subscribed(b)
        assert a.publish(b"runtime {}") == 1  # its own host's listener, over the socket
        async with asyncio.timeout(10):
            while not got["b"]:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # room for a duplicate, were one coming
        assert got == {"a": [b"runtime {}"], "b": [b"runtime {}"]}
    finally:
        on_a.close()
        on_b.close()


def test_a_worker_waiting_synchronously_hears_another_host(
    short_tmp_dir: Path, channel: str
) -> None:
    worker, web = host(short_tmp_dir / "worker", channel), host(short_tmp_dir / "web", channel)
    listener = worker.listen_sync()
    try:
        subscribed(worker)
        web.publish(b"presence")
        assert listener.wait(10, only=b"presence") == b"presence"
    finally:
        listener.close()


def test_two_processes_of_one_host_share_an_origin_and_hosts_differ(tmp_path: Path) -> None:
    assert origin_of(tmp_path / "notify") == origin_of(tmp_path / "x" / ".." / "notify")
    assert origin_of(tmp_path / "notify") != origin_of(tmp_path / "other")


def test_a_forked_child_relays_on_its_own_threads(short_tmp_dir: Path, channel: str) -> None:
    parent = host(short_tmp_dir / "parent", channel)
    listener = parent.listen_sync()
    try:
        subscribed(parent)
        pid = os.fork()
        if pid == 0:  # the child: a worker django-q forked from a process that relayed
            code = 1
            try:
                relay = parent.relay
                assert isinstance(relay, RedisRelay)
                relay.origin = origin_of(short_tmp_dir / "child")  # as if on another host
                LocalBus(short_tmp_dir / "child", relay).publish(b"queued")
                code = 0 if relay.flush(5) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert listener.wait(10, only=b"queued") == b"queued"
    finally:
        listener.close()


def test_without_redis_publishing_neither_blocks_nor_fails(
    short_tmp_dir: Path, channel: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = host(short_tmp_dir / "a", channel, url=f"redis://127.0.0.1:{free_port()}/0")
    listener = bus.listen_sync()
    try:
        with caplog.at_level(logging.WARNING, logger="llmux.notify"):
            assert bus.publish(b"queued") == 1  # this host still hears it at once
            assert listener.wait(1) == b"queued"
            assert isinstance(bus.relay, RedisRelay) and bus.relay.flush(10)
    finally:
        listener.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "llmux.notify"]
    assert warnings and "other hosts see changes at their next poll" in warnings[0], warnings
