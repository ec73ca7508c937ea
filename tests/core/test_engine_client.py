"""EngineClient against real simulator processes, over TCP and unix sockets."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from llmux_site.core.addresses import ListenAddress
from llmux_site.core.engine_client import (
    EngineClient,
    EngineHTTPError,
    EngineTimeout,
    EngineUnreachable,
)
from tests.simulator.harness import SimEngine, SimLauncher, free_port, launch_sims
from tests.timeouts import hanging


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimLauncher]:
    with launch_sims(tmp_path / "sim") as launcher:
        yield launcher


def requests_to(engine: SimEngine, path: str) -> int:
    return int(engine.state()["requests"].get(path, 0))


# The first and last release of each family in docs/ENGINES.md: 0.15-0.16 (no sleep modes),
# 0.17-0.31 (empty 200s, tags honoured), 0.32-0.33 (JSON answers).
VLLM_RELEASES = ("0.15", "0.16", "0.17", "0.31", "0.32", "0.33")


async def test_it_drives_sleep_and_wake(sim: SimLauncher) -> None:
    engine = sim.start()
    async with EngineClient(engine.address) as client:
        assert await client.health() is True
        assert await client.is_sleeping() is False
        assert await client.sleep(1, mode="wait") == {"status": "sleeping", "level": 1}
        assert (await client.is_sleeping(), await client.health()) == (True, True)
        assert await client.wake_up() == {"status": "awake", "tags": None}
        assert await client.is_sleeping() is False


@pytest.mark.parametrize("release", VLLM_RELEASES)
async def test_a_level_two_wake_restores_weights_and_kv_cache_on_every_release(
    sim: SimLauncher, release: str
) -> None:
    engine = sim.start("--sim-vllm-api", release)
    awake = engine.state()
    async with EngineClient(engine.address) as client:
        before = await client.probe("llmux-sim/test")
        await client.sleep(2)
        assert await client.is_sleeping() is True
        await client.wake_after_discard()
        assert await client.is_sleeping() is False
        assert (await client.probe("llmux-sim/test")).text == before.text
    state = engine.state()
    assert (state["awake"], state["weights_ok"], state["reload_count"]) == (True, True, 1)
    assert (state["weights_location"], state["kv_bytes"]) == ("device", awake["kv_bytes"])
    assert state["gpu_bytes"] == awake["gpu_bytes"]


@pytest.mark.parametrize("release", VLLM_RELEASES)
async def test_a_level_one_wake_restores_everything_on_every_release(
    sim: SimLauncher, release: str
) -> None:
    engine = sim.start("--sim-vllm-api", release)
    awake = engine.state()
    async with EngineClient(engine.address) as client:
        await client.sleep(1)
        await client.wake_up()
        assert await client.is_sleeping() is False
    state = engine.state()
    assert (state["awake"], state["weights_ok"], state["reload_count"]) == (True, True, 0)
    assert (state["kv_bytes"], state["gpu_bytes"]) == (awake["kv_bytes"], awake["gpu_bytes"])


async def test_an_empty_200_to_a_tagged_wake_is_not_taken_for_a_full_wake(
    sim: SimLauncher,
) -> None:
    # vLLM 0.17-0.31 answer `wake_up?tags=weights` with an empty 200 and keep the KV cache
    # asleep: only /is_sleeping tells the two apart.
    engine = sim.start("--sim-vllm-api", "0.31")
    async with EngineClient(engine.address) as client:
        assert await client.sleep(2) == {}
        await client.wake_after_discard()
    state = engine.state()
    assert (state["awake"], state["sleeping_tags"], state["weights_ok"]) == (True, [], True)
    assert state["requests"]["/wake_up"] == 2


async def test_a_hang_raises_engine_timeout_without_retrying(sim: SimLauncher) -> None:
    engine = sim.start("--sim-fault", "sleep=hang")
    async with EngineClient(engine.address, timeouts=hanging(sleep=0.3)) as client:
        with pytest.raises(EngineTimeout):
            await client.sleep(1)
    assert requests_to(engine, "/sleep") == 1


async def test_idempotent_calls_are_retried_on_5xx_and_timeouts(sim: SimLauncher) -> None:
    engine = sim.start("--sim-fault", "health=fail", wait=False)
    engine.wait_listening()
    async with EngineClient(engine.address, retries=2, retry_backoff_s=0.01) as client:
        assert await client.health() is False
        assert requests_to(engine, "/health") == 3
        engine.set_faults("health=hang")
        client.timeouts = hanging(health=0.3)
        with pytest.raises(EngineTimeout):
            await client.health()
        assert requests_to(engine, "/health") == 6


async def test_state_changes_and_inference_are_never_retried(sim: SimLauncher) -> None:
    engine = sim.start("--sim-fault", "sleep=fail", "--sim-fault", "decode=stall")
    # Only inference stalls: every other call must get its HTTP 500, not a timeout.
    async with EngineClient(engine.address, retries=5, timeouts=hanging(inference=0.3)) as client:
        with pytest.raises(EngineHTTPError) as failed:
            await client.sleep(1)
        assert failed.value.status == 500
        assert failed.value.message == "sleep failed (injected fault)"
        with pytest.raises(EngineTimeout):
            await client.completion({"prompt": "hi", "max_tokens": 1})
        engine.set_faults("wake=fail")
        with pytest.raises(EngineHTTPError):
            await client.wake_up()
    counts = engine.state()["requests"]
    assert (counts["/sleep"], counts["/v1/completions"], counts["/wake_up"]) == (1, 1, 1)


async def test_a_dead_address_is_unreachable() -> None:
    for address in (ListenAddress.tcp(free_port()), ListenAddress.unix("/tmp/llmux-none.sock")):
        async with EngineClient(address, retry_backoff_s=0.01) as client:
            assert await client.health() is False
            with pytest.raises(EngineUnreachable):
                await client.is_sleeping()
            with pytest.raises(EngineUnreachable):
                await client.sleep(1)


async def test_probe_detects_a_decode_stall_that_health_misses(sim: SimLauncher) -> None:
    engine = sim.start()
    async with EngineClient(engine.address, timeouts=hanging(probe=1)) as client:
        result = await client.probe("llmux-sim/test")
        assert len(result.text.split()) == 1
        assert 0 < result.latency_s < 1
        engine.set_faults("decode=stall")
        assert await client.health() is True
        with pytest.raises(EngineTimeout):
            await client.probe("llmux-sim/test")


async def test_it_works_over_a_unix_socket(sim: SimLauncher) -> None:
    engine = sim.start("--served-model-name", "tiny", uds=True)
    async with EngineClient(engine.address) as client:
        assert [m["id"] for m in await client.models()] == ["tiny"]
        assert (await client.version()).startswith("0.33")
        assert "vllm:num_requests_running" in await client.metrics()
        assert await client.load() == 0
        chat = await client.chat({"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
        assert chat["usage"]["completion_tokens"] == 16
        done = await client.completion({"model": "tiny", "prompt": "a b", "max_tokens": 2})
        assert (done["usage"]["prompt_tokens"], done["usage"]["completion_tokens"]) == (2, 2)
        vectors = await client.embeddings({"model": "tiny", "input": ["a", "b"]})
        assert len(vectors["data"]) == 2


async def test_openai_errors_become_engine_http_errors(sim: SimLauncher) -> None:
    engine = sim.start()
    async with EngineClient(engine.address) as client:
        with pytest.raises(EngineHTTPError) as missing:
            await client.completion({"model": "other", "prompt": "x"})
        assert (missing.value.status, missing.value.message) == (
            404,
            "The model `other` does not exist. Valid aliases: llmux-sim/test.",
        )
        await client.sleep(1)
        with pytest.raises(EngineHTTPError) as asleep:
            await client.chat({"messages": [{"role": "user", "content": "x"}]})
        assert (asleep.value.status, asleep.value.message) == (503, "engine is sleeping")
        with pytest.raises(ValueError, match="stream"):
            await client.completion({"prompt": "x", "stream": True})


async def test_collective_rpc_and_cache_calls(sim: SimLauncher) -> None:
    engine = sim.start("--tensor-parallel-size", "2")
    async with EngineClient(engine.address) as client:
        assert await client.collective_rpc("suspend_nccl", timeout=5) == [None, None]
        assert engine.state()["nccl_suspended"] is True
        with pytest.raises(EngineHTTPError) as unknown:
            await client.collective_rpc("nope")
        assert unknown.value.status == 400
        await client.reset_prefix_cache()
        await client.release_kv_cache_memory()
    state = engine.state()
    assert (state["prefix_cache_resets"], state["kv_bytes"]) == (1, 0)


async def test_a_session_passed_in_is_left_open(sim: SimLauncher) -> None:
    engine = sim.start()
    async with aiohttp.ClientSession() as session:
        async with EngineClient(engine.address, session=session) as client:
            assert await client.health() is True
        assert not session.closed


async def test_sleep_rejects_bad_arguments_before_calling(sim: SimLauncher) -> None:
    engine = sim.start()
    async with EngineClient(engine.address) as client:
        with pytest.raises(ValueError):
            await client.sleep(3)
        with pytest.raises(ValueError):
            await client.sleep(1, mode="later")
    assert requests_to(engine, "/sleep") == 0


def test_the_engine_client_does_not_import_django() -> None:
    code = (
        "import sys, llmux_site.core.engine_client; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
