"""`llmux serve` with several web processes: one port, connections spread, switches agree."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psutil

from tests.integration.harness import Llmux
from tests.integration.test_switching import ask, two_models

REDIS = "redis://127.0.0.1:6379/0"


def production_env(web_processes: int) -> dict[str, str]:
    """The production profile on the test's SQLite file, with Redis shared by the processes."""
    return {
        "LLMUX_REDIS_URL": REDIS,
        "LLMUX_SECRET_KEY": "x" * 40,
        "LLMUX_CLUSTER_NAME": f"llmux-test-{uuid.uuid4().hex[:12]}",
        "LLMUX_TLS": "false",
        "LLMUX_WEB_PROCESSES": str(web_processes),
    }


def web_processes(llmux: Llmux) -> list[psutil.Process]:
    assert llmux.process is not None
    children = psutil.Process(llmux.process.pid).children(recursive=True)
    return [c for c in children if "llmux_site.webserver" in " ".join(c.cmdline())]


def chat(connection: http.client.HTTPConnection, model: str) -> dict[str, object]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    connection.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 200, answer
    return answer  # type: ignore[no-any-return]


def test_two_web_processes_share_the_port_and_drain_together_for_switches(
    llmux: Llmux,
) -> None:
    env = production_env(2)
    llmux.command(["migrate", "-v0"], env)  # production migrates once, before its processes
    config = two_models()
    llmux.start(config, env)
    served = {name: model["model_path"] for name, model in config["models"].items()}
    assert "2 web processes share port" in llmux.log()
    web = web_processes(llmux)
    assert len(web) == 2, [p.cmdline() for p in web]
    # Keep-alive connections, as clients hold them: the kernel spreads them over both.
    connections = [
        http.client.HTTPConnection("127.0.0.1", llmux.port, timeout=60) for _ in range(16)
    ]
    for connection in connections:
        assert chat(connection, "alpha")["model"] == served["alpha"]
    for process in web:
        held = [c for c in process.net_connections() if c.status == psutil.CONN_ESTABLISHED]
        assert held, f"web process {process.pid} holds none of the 16 connections"
    # Alternating models while requests run on both processes: every switch drains both.
    client = llmux.client()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: ask(client, ("alpha", "beta")[i % 2]), range(24)))
    assert all(answers)
    for model in ("beta", "alpha"):
        for connection in connections:
            assert chat(connection, model)["model"] == served[model]
    swaps = llmux.swaps()
    assert swaps and all(outcome == "succeeded" for _, _, outcome, *_ in swaps), swaps
    for connection in connections:
        connection.close()
    assert llmux.stop() == 0
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in web)


def post(port: int, model: str, key: str) -> int:
    """The status of one request on a connection of its own (so the kernel may send it to
    either web process)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    try:
        connection.request("POST", "/v1/chat/completions", json.dumps(body), headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def known(send: Callable[[], int]) -> int:
    """`send`'s status once the web process that answers knows the key (each reloads its
    key table within a second of a miss; a 401 counts in no window)."""
    status = send()
    while status == 401:
        time.sleep(0.2)
        status = send()
    return status


def test_embedded_web_processes_count_a_keys_requests_per_minute_together(llmux: Llmux) -> None:
    llmux.start(two_models(), {"LLMUX_WEB_PROCESSES": "2", "LLMUX_REQUIRE_API_KEY": "on"})
    assert len(web_processes(llmux)) == 2
    key = llmux.manage(
        "from models_app.services.api_keys import create_key; "
        "print(create_key('shared', rpm_limit=4).plaintext)"
    ).split()[-1]
    statuses = [known(lambda: post(llmux.port, "alpha", key)) for _ in range(8)]
    # Eight requests within a minute on fresh connections, spread over both processes:
    # one window counts them all, so four pass and four are refused (each process
    # counting alone would have passed up to eight).
    assert sorted(statuses) == [200] * 4 + [429] * 4, statuses
