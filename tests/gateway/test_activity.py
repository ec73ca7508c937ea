"""Per-request activity through a real daphne and simulated engines: each request's figures,
the requests in flight, and an operator's cancel ending the client's answer."""

from __future__ import annotations

import concurrent.futures
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.gateway.conftest import Gateway, GatewayLauncher, upstream
from tests.plugins.engines import EngineSpawner

ENGINE = ("--sim-startup-seconds", "0", "--sim-weights-bytes", "256KiB")
ACTIVITY = {"LLMUX_TEST_ACTIVITY": "1"}


def inspect(gateway: Gateway, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(f"{gateway.url}{path}", method=method)
    with urllib.request.urlopen(request, timeout=5) as reply:
        return json.loads(reply.read())


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s")
        time.sleep(0.05)


@pytest.fixture
def gateway(spawn_engine: EngineSpawner, start_gateway: GatewayLauncher) -> Gateway:
    engine = spawn_engine("sim/act", extra_args=(*ENGINE, "--sim-tokens-per-sec", "20"))
    at = upstream(engine.address)
    return start_gateway(
        [
            {"name": "slow", "upstream": at, "served_name": "sim/act"},
            {"name": "switching", "upstream": at, "served_name": "sim/act", "acquire_delay": 0.3},
        ],
        env=ACTIVITY,
    )


def only_live(gateway: Gateway) -> dict[str, Any] | None:
    live = inspect(gateway, "/_activity")["live"]
    return live[0] if len(live) == 1 and not live[0]["waiting"] else None


def test_a_finished_request_is_recorded_with_its_wait_first_byte_and_tokens(
    gateway: Gateway,
) -> None:
    answer = gateway.client().completions.create(model="switching", prompt="x", max_tokens=4)
    (done,) = inspect(gateway, "/_activity")["finished"]
    assert (done["model"], done["status"], done["cancelled"]) == ("switching", 200, False)
    assert done["wait_s"] >= 0.3  # the stand-in switch
    assert done["ttft_s"] is not None and done["ttft_s"] <= done["duration_s"]
    assert answer.usage is not None
    assert done["completion_tokens"] == answer.usage.completion_tokens == 4
    assert done["prompt_text"] is None  # capture is off


def test_a_cancelled_answer_that_had_not_begun_is_an_openai_error(gateway: Gateway) -> None:
    client = gateway.client(timeout=60)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        asked = pool.submit(
            client.completions.create, model="slow", prompt="x", max_tokens=200
        )  # 10 s of tokens, sent in one piece at the end
        live = wait_for("the request in flight", lambda: only_live(gateway))
        assert inspect(gateway, f"/_cancel?{live['id']}", "POST") is True
        with pytest.raises(openai.APIStatusError) as refused:
            asked.result(timeout=30)
    assert refused.value.status_code == 499
    assert "cancelled by an llmux operator" in refused.value.message
    (done,) = inspect(gateway, "/_activity")["finished"]
    assert (done["status"], done["cancelled"]) == (499, True)
    assert inspect(gateway, "/_backend")["slow"]["released"] == 1


def test_a_cancelled_stream_stops_with_an_error_event(gateway: Gateway) -> None:
    stream = gateway.client(timeout=60).completions.create(
        model="slow", prompt="x", max_tokens=1000, stream=True
    )
    chunks = 0
    with pytest.raises(openai.APIError, match="cancelled by an llmux operator"):
        for _ in stream:
            chunks += 1
            if chunks == 2:
                live = wait_for("the stream in flight", lambda: only_live(gateway))
                assert live["stream"] is True
                assert inspect(gateway, f"/_cancel?{live['id']}", "POST") is True
    assert chunks < 1000
    (done,) = wait_for("the stream's record", lambda: inspect(gateway, "/_activity")["finished"])
    assert (done["status"], done["cancelled"], done["stream"]) == (200, True, True)
    assert inspect(gateway, "/_activity")["live"] == []
    assert inspect(gateway, "/_cancel?no-such-request", "POST") is False


def test_with_capture_on_the_prompt_and_the_answer_are_kept(
    spawn_engine: EngineSpawner, start_gateway: GatewayLauncher
) -> None:
    engine = spawn_engine("sim/cap", extra_args=ENGINE)
    gateway = start_gateway(
        [{"name": "cap", "upstream": upstream(engine.address), "served_name": "sim/cap"}],
        env={"LLMUX_TEST_ACTIVITY": "capture"},
    )
    answer = gateway.client().completions.create(model="cap", prompt="say hello", max_tokens=4)
    (done,) = inspect(gateway, "/_activity")["finished"]
    assert "say hello" in done["prompt_text"]
    assert answer.choices[0].text in done["completion_text"]
