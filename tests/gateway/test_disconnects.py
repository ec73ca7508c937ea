"""Clients that leave and engines that break: the engine learns, the slot comes back once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from typing import Any

import aiohttp
import openai
import pytest

from tests.gateway.conftest import GatewayLauncher, GatewayStack, upstream
from tests.plugins.engines import EngineSpawner, SpawnedEngine

SLOW_ENGINE = ("--sim-startup-seconds", "0", "--sim-weights-bytes", "256KiB")


def engine_state(engine: SpawnedEngine) -> dict[str, Any]:
    with urllib.request.urlopen(f"{engine.base_url}/sim/state", timeout=5) as reply:
        return json.loads(reply.read())  # type: ignore[no-any-return]


async def wait_until(condition: Any, timeout: float) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_client_leaving_mid_stream_cancels_the_engine_request_and_frees_the_slot(
    gateway_stack: GatewayStack,
) -> None:
    gateway, engine = gateway_stack.gateway, gateway_stack.slow
    before = gateway.counts()["slow"]
    body = {"model": "slow", "prompt": "x", "max_tokens": 1000, "stream": True}

    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{gateway.url}/v1/completions", json=body)
        first = await response.content.readline()
        assert first.startswith(b"data: ")
        assert engine_state(engine)["in_flight"] == 1
        response.close()  # drops the connection, as a client that goes away does

    took = await wait_until(lambda: engine_state(engine)["in_flight"] == 0, timeout=5)
    await wait_until(lambda: gateway.counts()["slow"]["released"] > before["released"], 5)

    assert took < 1.0
    after = gateway.counts()["slow"]
    assert after["acquired"] - before["acquired"] == 1
    assert after["released"] - before["released"] == 1
    assert after["extra_releases"] == 0


async def test_a_client_leaving_before_the_answer_starts_cancels_the_engine_request(
    gateway_stack: GatewayStack,
) -> None:
    # Not streamed: the engine generates for seconds before it sends a single byte.
    gateway, engine = gateway_stack.gateway, gateway_stack.slow
    before = gateway.counts()["slow"]
    body = {"model": "slow", "prompt": "x", "max_tokens": 200}

    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.post(f"{gateway.url}/v1/completions", json=body))
        await wait_until(lambda: engine_state(engine)["in_flight"] == 1, timeout=5)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request

    took = await wait_until(lambda: engine_state(engine)["in_flight"] == 0, timeout=5)
    await wait_until(lambda: gateway.counts()["slow"]["released"] > before["released"], 5)

    assert took < 1.0
    after = gateway.counts()["slow"]
    assert after["acquired"] - before["acquired"] == 1
    assert after["extra_releases"] == 0


async def test_a_client_leaving_while_the_model_switches_in_frees_no_slot_twice(
    gateway_stack: GatewayStack,
) -> None:
    gateway = gateway_stack.gateway
    before = gateway.counts()["switching"]
    body = {"model": "switching", "prompt": "x", "max_tokens": 2}

    async with aiohttp.ClientSession() as session:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await session.post(f"{gateway.url}/v1/completions", json=body)
    await asyncio.sleep(0.6)  # past the acquire delay: had the wait continued, it would hold one

    after = gateway.counts()["switching"]
    assert after["acquired"] == before["acquired"]
    assert after["released"] == before["released"]


def test_an_engine_crashing_before_it_answers_is_a_502(
    spawn_engine: EngineSpawner, start_gateway: GatewayLauncher
) -> None:
    engine = spawn_engine("sim/crashy", extra_args=SLOW_ENGINE)
    gateway = start_gateway(
        [{"name": "crashy", "upstream": upstream(engine.address), "served_name": "sim/crashy"}]
    )
    request = urllib.request.Request(
        f"{engine.base_url}/sim/faults", data=json.dumps({"faults": ["crash=request"]}).encode()
    )
    urllib.request.urlopen(request, timeout=5).close()

    with pytest.raises(openai.InternalServerError) as caught:
        gateway.client().completions.create(model="crashy", prompt="hi")

    assert caught.value.status_code == 502
    assert "failed to answer" in caught.value.message
    counts = gateway.counts()["crashy"]
    assert counts["acquired"] == counts["released"] == 1


async def test_an_engine_dying_mid_stream_ends_the_stream_with_an_error_event(
    spawn_engine: EngineSpawner, start_gateway: GatewayLauncher
) -> None:
    engine = spawn_engine("sim/dying", extra_args=(*SLOW_ENGINE, "--sim-tokens-per-sec", "20"))
    gateway = start_gateway(
        [{"name": "dying", "upstream": upstream(engine.address), "served_name": "sim/dying"}]
    )
    body = {"model": "dying", "prompt": "x", "max_tokens": 1000, "stream": True}

    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{gateway.url}/v1/completions", json=body)
        assert response.status == 200
        assert (await response.content.readline()).startswith(b"data: ")
        os.killpg(engine.process.pgid, signal.SIGKILL)
        async with asyncio.timeout(5):
            rest = await response.read()

    assert rest.endswith(b"\n\n")
    events = [line for line in rest.splitlines() if line.startswith(b"data: ")]
    last = json.loads(events[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == 502
    assert set(last["error"]) == {"message", "type", "param", "code"}
    counts = gateway.counts()["dying"]
    assert counts["acquired"] == counts["released"] == 1


def test_the_openai_client_sees_a_mid_stream_engine_death_as_an_error(
    spawn_engine: EngineSpawner, start_gateway: GatewayLauncher
) -> None:
    engine = spawn_engine("sim/dying", extra_args=(*SLOW_ENGINE, "--sim-tokens-per-sec", "20"))
    gateway = start_gateway(
        [{"name": "dying", "upstream": upstream(engine.address), "served_name": "sim/dying"}]
    )
    stream = gateway.client().completions.create(
        model="dying", prompt="x", max_tokens=1000, stream=True
    )

    with pytest.raises(openai.APIError, match="failed to answer"):
        for index, _chunk in enumerate(stream):
            if index == 1:
                os.killpg(engine.process.pgid, signal.SIGKILL)
