"""Chaos: kill -9 llmux's worker mid-switch and its web process mid-stream, then recover.

`llmux serve` stops everything when one of its children dies, so these tests run the pieces
as production does: `migrate` and `llmux_import` once, then daphne and `llmux worker` as
separate processes, each in a process group of its own so that kill -9 takes the whole
tree (qcluster's main, sentinel, pusher, monitor and workers). Engines live in sessions of
their own and survive both: after a restart every model must be in a consistent state, no
engine may run twice, and the next request must succeed.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import openai
import pytest

from tests.integration.cluster import Cluster, MakeCluster, ask, gone, wait_for_state
from tests.integration.harness import Llmux, sim_model
from tests.integration.invariants import (
    one_process_per_model,
    simulator_processes,
    wait_until,
)
from tests.plugins.engines import free_port

DRAIN_TIMEOUT_SECS = 20


def chaos_config(**gamma_extra: Any) -> dict[str, Any]:
    gamma_args = ["--sim-startup-seconds", "3", *gamma_extra.pop("extra_args", [])]
    return {
        "vllm_command": "llmux-sim",
        "policy": {"min_active_secs": 0, "request_timeout_secs": 60},
        "models": {
            "alpha": sim_model(free_port(), sleep_level=1, drain_timeout_secs=DRAIN_TIMEOUT_SECS),
            "beta": sim_model(free_port(), sleep_level=2, drain_timeout_secs=DRAIN_TIMEOUT_SECS),
            "gamma": sim_model(
                free_port(),
                sleep_level=5,
                drain_timeout_secs=DRAIN_TIMEOUT_SECS,
                extra_args=gamma_args,
            ),
        },
    }


def stream_lines(base_url: str, model: str, max_tokens: int) -> list[str]:
    """A streamed chat completion read to its end (in a thread); returns its data lines."""
    import asyncio

    async def read() -> list[str]:
        payload = {
            "model": model,
            "messages": [{"role": "user", "content": "a long story"}],
            "max_tokens": max_tokens,
            "stream": True,
        }
        lines = []
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{base_url}/chat/completions", json=payload) as response,
        ):
            assert response.status == 200, await response.text()
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    lines.append(line.removeprefix("data: "))
        return lines

    return asyncio.run(read())


def test_a_worker_killed_during_a_cold_start_is_repaired_and_nothing_runs_twice(
    cluster: MakeCluster,
) -> None:
    llmux: Cluster = cluster(chaos_config())
    server = llmux.llmux
    assert ask(server, "alpha")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        interrupted = pool.submit(ask, server, "gamma")
        wait_for_state(server, "gamma", "starting")
        (gamma,) = simulator_processes(llmux.model_path("gamma"))
        time.sleep(0.5)  # well inside its three-second start-up
        llmux.kill_9(llmux.worker)
        assert gamma.is_running(), "engines must outlive the worker"
        llmux.start_worker()
        # The restarted worker closes the dead switch before it takes work (not once the
        # dead worker's 15-second lease expires): the waiting client hears why at once.
        with pytest.raises(openai.APIStatusError) as caught:
            interrupted.result(timeout=5)
    assert caught.value.status_code == 503
    assert "worker" in str(caught.value.message), caught.value.message
    assert llmux.switch_requests("gamma") == [("failed", "the worker running this switch died")]
    # The half-started engine is stopped, not adopted as if it were ready.
    wait_for_state(server, "gamma", "stopped")
    assert gone(gamma)
    assert server.states()["alpha"] == "sleeping"
    assert one_process_per_model(llmux.database) == []

    assert ask(server, "gamma")
    assert ask(server, "alpha")
    assert server.states() == {"alpha": "running", "gamma": "stopped"}  # beta never ran
    assert len(simulator_processes(llmux.model_path("gamma"))) == 0
    assert one_process_per_model(llmux.database) == []
    assert llmux.open_switches() == []


def test_a_worker_killed_while_draining_resumes_the_model_and_its_streams_finish(
    cluster: MakeCluster,
) -> None:
    llmux: Cluster = cluster(chaos_config())
    server = llmux.llmux
    assert ask(server, "alpha")
    (alpha,) = simulator_processes(llmux.model_path("alpha"))
    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        # Four seconds of decoding each: the switch to beta drains alpha meanwhile.
        streams = eight_streams_on_alpha(pool, llmux)
        interrupted = pool.submit(ask, server, "beta")
        wait_for_state(server, "alpha", "draining")
        llmux.kill_9(llmux.worker)
        llmux.start_worker()
        with pytest.raises(openai.APIStatusError) as caught:
            interrupted.result(timeout=5)
        assert caught.value.status_code == 503
        # The drain was never finished: alpha serves again and every stream ends normally.
        for stream in streams:
            lines = stream.result(timeout=60)
            assert lines[-1] == "[DONE]", lines[-3:]
            assert not [line for line in lines if '"error"' in line]
    assert llmux.switch_requests("beta") == [("failed", "the worker running this switch died")]
    wait_for_state(server, "alpha", "running")
    assert alpha.is_running()
    assert simulator_processes(llmux.model_path("alpha")) == [alpha]

    assert ask(server, "beta")
    assert server.states() == {"alpha": "sleeping", "beta": "running"}
    assert simulator_processes(llmux.model_path("alpha")) == [alpha]  # slept, not restarted
    assert one_process_per_model(llmux.database) == []
    assert llmux.open_switches() == []


def test_a_web_process_killed_during_streams_and_a_switch_leaves_nothing_behind(
    cluster: MakeCluster,
) -> None:
    llmux: Cluster = cluster(chaos_config())
    server = llmux.llmux
    assert ask(server, "alpha")
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        streams = eight_streams_on_alpha(pool, llmux)
        # Requests waiting for gamma: their demand is in the web process's presence row.
        waiting = [pool.submit(ask, server, "gamma") for _ in range(10)]
        wait_for_state(server, "alpha", "draining")
        llmux.kill_9(llmux.web)
        cut: list[concurrent.futures.Future[Any]] = [*streams, *waiting]
        for future in cut:
            with pytest.raises((aiohttp.ClientError, openai.APIConnectionError)):
                future.result(timeout=60)
    # The engine hears that its clients are gone: nothing is left generating.
    wait_until(lambda: llmux_load(llmux, "alpha") == 0, timeout=10, what="alpha to go idle")
    llmux.start_web()
    # The switch the dead web process asked for ends (it runs or is skipped: nobody waits).
    wait_until(lambda: llmux.open_switches() == [], timeout=60, what="the switch queue to empty")

    assert ask(server, "alpha")
    before = int(server.query("SELECT COALESCE(MAX(id), 0) FROM models_app_swapevent")[0][0])
    assert ask(server, "gamma")  # a following switch drains alpha without waiting for anyone
    swaps = server.swaps()
    later = server.query(
        "SELECT from_name, to_name, outcome, forced_drain, drain_ms FROM models_app_swapevent "
        "WHERE id > ? ORDER BY id",
        before,
    )
    assert [row[:4] for row in later] == [("alpha", "gamma", "succeeded", 0)], swaps
    assert later[0][4] < 1000, later
    assert live_waiting_demand(server) == [{}]  # only the new web process, waiting for nothing
    assert one_process_per_model(llmux.database) == []


def live_waiting_demand(server: Llmux) -> list[dict[str, Any]]:
    """The waiting demand of web processes that heartbeat (a killed one's row goes stale)."""
    recent = datetime.now(UTC) - timedelta(seconds=3)
    rows = server.query("SELECT heartbeat_at, waiting FROM models_app_webinstance")
    return [
        json.loads(waiting)
        for heartbeat, waiting in rows
        if datetime.fromisoformat(heartbeat).replace(tzinfo=UTC) >= recent
    ]


def eight_streams_on_alpha(
    pool: concurrent.futures.ThreadPoolExecutor, llmux: Cluster
) -> list[concurrent.futures.Future[list[str]]]:
    """Eight long streams (4,000 tokens each) on alpha, once all eight are decoding."""
    base_url = llmux.llmux.base_url
    streams = [pool.submit(stream_lines, base_url, "alpha", 4000) for _ in range(8)]
    wait_until(lambda: llmux_load(llmux, "alpha") == 8, timeout=30, what="eight streams on alpha")
    return streams


def llmux_load(llmux: Cluster, model: str) -> int:
    """Requests in flight on a model's engine, asked of the engine itself."""
    import urllib.request

    url = f"http://127.0.0.1:{llmux.config['models'][model]['port']}/load"
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(json.loads(response.read())["server_load"])
