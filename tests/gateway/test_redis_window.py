"""Keys' requests-per-minute counted in the real Redis, shared by every web process."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from llmux_site.gateway.redis_window import RedisWindow
from tests.plugins.engines import free_port

REDIS = "redis://127.0.0.1:6379/0"


def namespace() -> str:
    return f"llmux-test-{uuid.uuid4().hex}"  # no other run shares these windows


async def test_two_web_processes_share_one_window_per_key() -> None:
    shared = namespace()
    first, second = RedisWindow(REDIS, shared), RedisWindow(REDIS, shared)
    try:
        assert await first.admit(7, 2) is None
        assert await second.admit(7, 2) is None
        waits = [await first.admit(7, 2), await second.admit(7, 2)]
        assert all(w is not None and 59 < w <= 60 for w in waits), waits
        assert await second.admit(8, 2) is None  # another key has its own window
        assert await RedisWindow(REDIS, namespace()).admit(7, 2) is None  # another cluster
    finally:
        await first.close()
        await second.close()


async def test_the_window_slides_and_refused_requests_take_no_slot() -> None:
    window = RedisWindow(REDIS, namespace(), window=0.4)
    try:
        assert await window.admit(7, 1) is None
        wait = await window.admit(7, 1)
        assert wait is not None and 0 < wait <= 0.4
        await asyncio.sleep(wait + 0.05)
        # Had the refusal been counted, the key would still be over its limit here.
        assert await window.admit(7, 1) is None
    finally:
        await window.close()


async def test_without_redis_requests_are_admitted_and_it_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    window = RedisWindow(f"redis://127.0.0.1:{free_port()}/0", namespace())
    try:
        with caplog.at_level(logging.WARNING, logger="llmux.gateway"):
            assert [await window.admit(7, 1) for _ in range(3)] == [None, None, None]
    finally:
        await window.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "llmux.gateway"]
    assert len(warnings) == 1 and "rate limits not enforced" in warnings[0], warnings
