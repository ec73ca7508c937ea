"""An engine whose process is killed mid-stream, through `llmux serve` (issue 13): the
client gets an OpenAI-shaped error, nothing of the engine's tree is left, and the next
request cold-starts it. The simulator's child processes outlive their engine's process as
a real vLLM's engine core does; tests/real_vllm/test_failures.py runs the same on vLLM."""

from __future__ import annotations

import signal
import time
from typing import Any

import openai
import psutil

from tests.integration.harness import Llmux, sim_model
from tests.plugins.engines import free_port

QUESTION = [{"role": "user", "content": "tell me about the engines"}]
GONE_WITHIN = 60.0  # seconds: generous for a loaded 2-core machine


def engine_pid(server: Llmux, model: str) -> int | None:
    rows = server.query(
        "SELECT r.pid FROM models_app_engineruntime r "
        "JOIN models_app_modeldefinition m ON m.id = r.model_id WHERE m.name = ?",
        model,
    )
    return rows[0][0] if rows else None


def engine_tree(pid: int) -> list[psutil.Process]:
    """The engine's process and every descendant (vLLM: engine core, worker, tracker)."""
    leader = psutil.Process(pid)
    return [leader, *leader.children(recursive=True)]


def still_running(processes: list[psutil.Process], timeout: float = GONE_WITHIN) -> list[str]:
    """Those of `processes` still there after `timeout` (a zombie is still there)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in processes if p.is_running()]
        if not left or time.monotonic() > deadline:
            return [describe(p) for p in left if p.is_running()]
        time.sleep(0.1)


def describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {process.status()} {' '.join(process.cmdline())[:80]}"
    except psutil.Error as exc:  # a zombie has no command line
        return f"{process.pid} ({type(exc).__name__})"


def answer(client: openai.OpenAI, model: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=QUESTION, temperature=0, max_tokens=12
    )
    return reply.choices[0].message.content or ""


def stream_and_kill(
    client: openai.OpenAI, model: str, victim: psutil.Process, max_tokens: int, n: int = 1
) -> openai.APIError:
    """Stream a long answer (`n` of them at once) and kill -9 `victim` once tokens flow;
    the error raised."""
    stream = client.chat.completions.create(
        model=model,
        messages=QUESTION,
        temperature=0 if n == 1 else 1,  # vLLM: greedy sampling makes one answer only
        max_tokens=max_tokens,
        n=n,
        stream=True,
        extra_body={"ignore_eos": True},  # vLLM: the answer runs to max_tokens
    )
    received: list[str] = []
    try:
        for chunk in stream:
            received.append(chunk.model_dump_json(exclude_none=True)[:300])
            if len(received) == 2:  # the first token (after vLLM's role chunk)
                victim.send_signal(signal.SIGKILL)
    except openai.APIError as error:
        assert len(received) >= 2, f"failed before the kill: {error!r}"
        return error
    raise AssertionError(f"no error after {len(received)} chunks, the last: {received[-3:]}")


def assert_openai_error(error: openai.APIError) -> None:
    # Not a connection error or a timeout (subclasses): an error event in the stream.
    assert type(error) is openai.APIError, repr(error)
    body: Any = error.body
    assert isinstance(body, dict) and body.get("message"), body


def test_an_engine_killed_mid_stream_leaves_nothing_and_cold_starts_again(llmux: Llmux) -> None:
    children = ["--sim-child-processes", "2", "--sim-tokens-per-sec", "20"]
    llmux.start(
        {
            "vllm_command": "llmux-sim",
            "policy": {"min_active_secs": 0, "request_timeout_secs": 60},
            "models": {"alpha": sim_model(free_port(), sleep_level=5, extra_args=children)},
        }
    )
    client = llmux.client(timeout=60)
    before = answer(client, "alpha")
    pid = engine_pid(llmux, "alpha")
    assert pid is not None
    tree = engine_tree(pid)
    assert len(tree) == 3

    assert_openai_error(stream_and_kill(client, "alpha", tree[0], max_tokens=200))
    assert still_running(tree) == []  # the children too, which outlive their engine

    assert answer(client, "alpha") == before
    assert engine_pid(llmux, "alpha") not in (None, pid)
    assert [(swap[1], swap[2], swap[3]) for swap in llmux.swaps()][-1] == (
        "alpha",
        "succeeded",
        "cold_start",
    )
