"""Sleep and wake against a real simulator process: levels, partial wakes, modes, cycles."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import aiohttp
import pytest

from llmux_site.core.engine_client import EngineClient
from tests.simulator.harness import Reply, SimEngine, SimLauncher

PROMPT = {"prompt": "the quick brown fox", "max_tokens": 12, "temperature": 0}


def completion_text(engine: SimEngine) -> str:
    reply = engine.post("/v1/completions", PROMPT)
    assert reply.status == 200, reply.body
    return str(reply.json()["choices"][0]["text"])


async def test_it_survives_1000_sleep_wake_cycles_with_intact_weights(sim: SimLauncher) -> None:
    engine = sim.start("--sim-tokens-per-sec", "0")
    async with EngineClient(engine.address) as client:
        for cycle in range(1000):
            level = 1 if cycle % 2 == 0 else 2
            assert (await client.sleep(level))["level"] == level
            if level == 1:
                await client.wake_up()
            else:
                await client.wake_after_discard()
            state = engine.state()
            assert state["weights_ok"] is True, f"cycle {cycle}: {state}"
            assert state["awake"], f"cycle {cycle}: {state}"
    state = engine.state()
    assert state["sleep_count"] == 1000
    assert state["wake_count"] == 1000
    assert state["reload_count"] == 500


def test_health_stays_up_while_sleeping(sim: SimLauncher) -> None:
    engine = sim.start()
    for level in (1, 2):
        assert engine.post(f"/sleep?level={level}").json() == {"status": "sleeping", "level": level}
        health = engine.get("/health")
        assert (health.status, health.body) == (200, b"")
        assert engine.get("/is_sleeping").json() == {"is_sleeping": True}
        engine.post("/wake_up")
        engine.post("/collective_rpc", {"method": "reload_weights"})
    assert engine.get("/is_sleeping").json() == {"is_sleeping": False}


@pytest.mark.parametrize("level", [1, 2])
def test_it_refuses_requests_while_sleeping_with_an_openai_error(
    sim: SimLauncher, level: int
) -> None:
    engine = sim.start()
    engine.post(f"/sleep?level={level}")
    for path, body in [
        ("/v1/completions", PROMPT),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/embeddings", {"input": "hi"}),
    ]:
        reply = engine.post(path, body)
        assert reply.status == 503
        error = reply.json()["error"]
        assert error["message"] == "engine is sleeping"
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == 503


def test_level_one_moves_weights_to_host_and_back(sim: SimLauncher) -> None:
    engine = sim.start()
    before = engine.state()
    engine.post("/sleep?level=1")
    asleep = engine.state()
    assert (asleep["weights_location"], asleep["gpu_bytes"]) == ("host", 0)
    assert asleep["host_bytes"] == before["weights_bytes"]
    assert asleep["weights_ok"] is True
    # vLLM echoes the tags it was given: none means all, answered as null.
    assert engine.post("/wake_up").json() == {"status": "awake", "tags": None}
    awake = engine.state()
    assert (awake["weights_location"], awake["host_bytes"]) == ("device", 0)
    assert awake["gpu_bytes"] == before["gpu_bytes"]


def test_level_two_wake_without_reload_gives_garbage(sim: SimLauncher) -> None:
    engine = sim.start()
    original = completion_text(engine)
    engine.post("/sleep?level=2")
    assert engine.state()["weights_location"] == "dropped"
    assert engine.post("/wake_up?tags=weights").json() == {
        "status": "sleeping",
        "tags": ["weights"],
    }
    assert engine.post("/wake_up?tags=kv_cache").json()["status"] == "awake"
    state = engine.state()
    assert (state["weights_location"], state["weights_ok"]) == ("garbage", False)
    assert completion_text(engine) != original

    engine.post("/sleep?level=2")
    engine.post("/wake_up?tags=weights")
    assert engine.post("/collective_rpc", {"method": "reload_weights"}).json() == {
        "results": [None]
    }
    engine.post("/wake_up?tags=kv_cache")
    assert engine.state()["weights_ok"] is True
    assert completion_text(engine) == original


def test_the_older_level_two_sequence_also_restores_the_weights(sim: SimLauncher) -> None:
    engine = sim.start()
    original = completion_text(engine)
    engine.post("/sleep?level=2")
    engine.post("/wake_up")
    assert engine.post("/collective_rpc", {"method": "reload_weights"}).status == 200
    assert engine.post("/reset_prefix_cache").status == 200
    state = engine.state()
    assert (state["weights_ok"], state["prefix_cache_resets"]) == (True, 1)
    assert completion_text(engine) == original


def test_reload_weights_needs_a_weights_buffer(sim: SimLauncher) -> None:
    engine = sim.start()
    engine.post("/sleep?level=2")
    reply = engine.post("/collective_rpc", {"method": "reload_weights"})
    assert reply.status == 500
    assert "wake weights first" in reply.json()["error"]["message"]


def test_reload_weights_is_throttled_by_the_load_rate(sim: SimLauncher) -> None:
    engine = sim.start("--sim-load-bytes-per-sec", "256KiB")  # 64 KiB weights: ~0.25 s
    engine.post("/sleep?level=2")
    engine.post("/wake_up?tags=weights")
    started = time.monotonic()
    engine.post("/collective_rpc", {"method": "reload_weights"})
    assert time.monotonic() - started >= 0.2


def test_sleep_needs_sleep_mode(sim: SimLauncher) -> None:
    engine = sim.start("--sim-startup-seconds", "0", fast=False)
    reply = engine.post("/sleep?level=1")
    assert reply.status == 400
    assert "--enable-sleep-mode" in reply.json()["error"]["message"]


def test_it_rejects_bad_levels_modes_and_rpc_methods(sim: SimLauncher) -> None:
    engine = sim.start()
    assert engine.post("/sleep?level=3").status == 400
    assert engine.post("/sleep?level=1&mode=later").status == 400
    reply = engine.post("/collective_rpc", {"method": "format_disk"})
    assert reply.status == 400
    assert reply.json()["error"]["param"] == "method"


def test_a_wake_naming_a_tag_that_is_not_asleep_changes_nothing(sim: SimLauncher) -> None:
    # vLLM's executor only logs a warning for such a call, and wakes none of the tags.
    engine = sim.start()
    engine.post("/sleep?level=2")
    for tags in ("tags=everything", "tags=weights&tags=everything"):
        reply = engine.post(f"/wake_up?{tags}")
        assert (reply.status, reply.json()["status"]) == (200, "sleeping")
        assert engine.state()["sleeping_tags"] == ["kv_cache", "weights"]
    engine.post("/wake_up?tags=weights")
    assert engine.post("/wake_up?tags=weights&tags=kv_cache").json()["status"] == "sleeping"
    assert engine.state()["sleeping_tags"] == ["kv_cache"]


def test_collective_rpc_answers_once_per_rank(sim: SimLauncher) -> None:
    engine = sim.start("--tensor-parallel-size", "2")
    assert engine.post("/collective_rpc", {"method": "suspend_nccl"}).json() == {
        "results": [None, None]
    }
    assert engine.state()["nccl_suspended"] is True
    engine.post("/collective_rpc", {"method": "resume_nccl", "args": [], "kwargs": {}})
    assert engine.state()["nccl_suspended"] is False


def test_release_kv_cache_memory_frees_only_the_kv_cache(sim: SimLauncher) -> None:
    engine = sim.start()
    before = engine.state()
    assert engine.post("/release_kv_cache_memory").status == 200
    after = engine.state()
    assert after["kv_bytes"] == 0
    assert after["gpu_bytes"] == before["gpu_bytes"] - before["kv_bytes"]
    completion_text(engine)  # the next request allocates it again
    assert engine.state()["kv_bytes"] == before["kv_bytes"]


class Background:
    """A 100-token completion running in a thread, so the test can sleep the engine meanwhile."""

    def __init__(self, engine: SimEngine) -> None:
        self.reply: Reply | None = None
        self._thread = threading.Thread(target=self._run, args=(engine,))
        self._thread.start()

    def _run(self, engine: SimEngine) -> None:
        self.reply = engine.post("/v1/completions", {**PROMPT, "max_tokens": 100}, timeout=10)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def result(self) -> Reply:
        self._thread.join(5)
        assert self.reply is not None, "the request did not finish"
        return self.reply


def _wait_in_flight(engine: SimEngine, count: int = 1) -> None:
    deadline = time.monotonic() + 5
    while engine.state()["in_flight"] < count:
        assert time.monotonic() < deadline, "request never started"
        time.sleep(0.01)


def test_sleep_mode_abort_ends_in_flight_requests_with_an_error(sim: SimLauncher) -> None:
    engine = sim.start("--sim-tokens-per-sec", "200")
    request = Background(engine)
    _wait_in_flight(engine)
    engine.post("/sleep?level=1&mode=abort")
    reply = request.result()
    assert reply.status == 503
    assert "aborted" in reply.json()["error"]["message"]


def test_sleep_mode_wait_lets_in_flight_requests_finish_first(sim: SimLauncher) -> None:
    engine = sim.start("--sim-tokens-per-sec", "400")  # 100 tokens: 0.25 s
    request = Background(engine)
    _wait_in_flight(engine)
    started = time.monotonic()
    assert engine.post("/sleep?level=1&mode=wait").status == 200
    assert time.monotonic() - started >= 0.1
    assert request.result().status == 200


def test_sleep_mode_keep_pauses_requests_until_wake(sim: SimLauncher) -> None:
    engine = sim.start("--sim-tokens-per-sec", "400")
    request = Background(engine)
    _wait_in_flight(engine)
    engine.post("/sleep?level=1&mode=keep")
    time.sleep(0.4)  # longer than the whole request would take awake
    assert request.running
    assert engine.state()["waiting"] == 1
    engine.post("/wake_up")
    assert request.result().status == 200


def test_level_zero_only_pauses_scheduling(sim: SimLauncher) -> None:
    engine = sim.start()
    before = engine.state()
    engine.post("/sleep?level=0")
    paused = engine.state()
    assert paused["sleep_level"] == 0
    assert paused["gpu_bytes"] == before["gpu_bytes"]
    request = Background(engine)
    _wait_in_flight(engine)
    time.sleep(0.2)
    assert request.running, "a request ran while scheduling was paused"
    engine.post("/wake_up")
    assert request.result().status == 200


def test_a_tagged_wake_ends_a_level_zero_pause(sim: SimLauncher) -> None:
    engine = sim.start()
    engine.post("/sleep?level=0")
    assert engine.state()["sleeping_tags"] == []
    assert engine.post("/wake_up?tags=scheduling").json() == {
        "status": "awake",
        "tags": ["scheduling"],
    }


@pytest.mark.parametrize(
    ("release", "json_bodies"),
    [("0.15", False), ("0.17", False), ("0.31", False), ("0.32", True), ("0.33", True)],
)
def test_each_release_answers_sleep_and_wake_in_its_shape_and_honours_tags(
    sim: SimLauncher, release: str, json_bodies: bool
) -> None:
    engine = sim.start("--sim-vllm-api", release)
    assert engine.get("/version").json() == {"version": f"{release}.0+llmux.sim"}
    replies = [engine.post("/sleep?level=2"), engine.post("/wake_up?tags=weights")]
    assert engine.get("/is_sleeping").json() == {"is_sleeping": True}
    replies.append(engine.post("/wake_up?tags=kv_cache"))
    assert engine.get("/is_sleeping").json() == {"is_sleeping": False}
    assert [reply.status for reply in replies] == [200, 200, 200]
    bodies = [reply.json() if json_bodies else reply.body for reply in replies]
    if json_bodies:
        assert bodies == [
            {"status": "sleeping", "level": 2},
            {"status": "sleeping", "tags": ["weights"]},
            {"status": "awake", "tags": ["kv_cache"]},
        ]
    else:
        assert bodies == [b"", b"", b""]


@pytest.mark.parametrize(
    ("release", "reset_body", "release_kv_status"),
    [("0.25", b"", 404), ("0.26", b'{"success": true}', 404), ("0.31", b'{"success": true}', 200)],
)
def test_cache_routes_follow_the_release(
    sim: SimLauncher, release: str, reset_body: bytes, release_kv_status: int
) -> None:
    engine = sim.start("--sim-vllm-api", release)
    reset = engine.post("/reset_prefix_cache")
    assert (reset.status, reset.body) == (200, reset_body)
    released = engine.post("/release_kv_cache_memory")
    assert released.status == release_kv_status
    if release_kv_status == 200:
        assert released.body == b""


def test_the_newest_release_reports_a_kv_cache_release(sim: SimLauncher) -> None:
    engine = sim.start()
    assert engine.post("/release_kv_cache_memory").json() == {"status": "kv_cache_released"}


def test_before_0_17_level_zero_discards_everything_and_mode_is_ignored(
    sim: SimLauncher,
) -> None:
    engine = sim.start("--sim-vllm-api", "0.16", "--sim-tokens-per-sec", "400")
    engine.post("/sleep?level=0")
    state = engine.state()
    assert (state["sleep_level"], state["weights_location"], state["gpu_bytes"]) == (
        2,
        "dropped",
        0,
    )
    engine.post("/wake_up")
    engine.post("/collective_rpc", {"method": "reload_weights"})
    request = Background(engine)
    _wait_in_flight(engine)
    engine.post("/sleep?level=1&mode=wait")  # no waiting: the request is cut
    assert request.result().status == 503


def test_the_legacy_flag_stands_for_the_0_17_family(sim: SimLauncher) -> None:
    engine = sim.start("--sim-legacy-api")
    assert engine.get("/version").json() == {"version": "0.17.0+llmux.sim"}
    assert (engine.post("/sleep?level=1").body, engine.post("/wake_up").body) == (b"", b"")


async def test_sleep_mode_abort_ends_a_stream_with_an_error_event(sim: SimLauncher) -> None:
    engine = sim.start("--sim-tokens-per-sec", "200")
    url = engine.address.base_url() + "/v1/completions"
    body = {**PROMPT, "max_tokens": 100, "stream": True}
    events: list[bytes] = []
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        async for line in response.content:
            if line.strip():
                events.append(line.strip())
            if len(events) == 3:
                await asyncio.to_thread(engine.post, "/sleep?level=1&mode=abort")
    assert events[-1] == b"data: [DONE]"
    error = json.loads(events[-2][len(b"data: ") :])["error"]
    assert (error["code"], error["type"]) == (503, "ServiceUnavailableError")
    assert len(events) < 50
