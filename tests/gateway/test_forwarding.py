"""The gateway forwards OpenAI requests to the right engine and streams answers through.

Everything runs for real: daphne serving the gateway, simulated engines on TCP and on a unix
socket, and the official ``openai`` client.
"""

from __future__ import annotations

import json
import time
import urllib.request

from tests.gateway.conftest import EchoUpstream, GatewayLauncher, GatewayStack

MESSAGES = [{"role": "user", "content": "Tell me about mountains"}]
JSON = {"Content-Type": "application/json"}


def test_it_answers_chat_completions_like_the_engine_does(gateway_stack: GatewayStack) -> None:
    direct = gateway_stack.engine_client(gateway_stack.tcp).chat.completions.create(
        model="sim/tcp", messages=MESSAGES, temperature=0, seed=7, max_tokens=12
    )

    reply = gateway_stack.gateway.client().chat.completions.create(
        model="chat", messages=MESSAGES, temperature=0, seed=7, max_tokens=12
    )

    assert reply.choices[0].message.content == direct.choices[0].message.content
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 12


def test_it_resolves_aliases_and_forwards_names_the_engine_knows(
    gateway_stack: GatewayStack,
) -> None:
    client = gateway_stack.gateway.client()

    by_alias = client.completions.create(
        model="chat-v1", prompt="once", temperature=0, seed=3, max_tokens=5
    )
    by_served_name = client.completions.create(
        model="sim/tcp", prompt="once", temperature=0, seed=3, max_tokens=5
    )

    assert by_alias.choices[0].text == by_served_name.choices[0].text
    assert by_alias.model == "sim/tcp"


def test_it_forwards_to_an_engine_on_a_unix_socket(gateway_stack: GatewayStack) -> None:
    direct = gateway_stack.engine_client(gateway_stack.uds).completions.create(
        model="sim/uds", prompt="a river", temperature=0, seed=1, max_tokens=8
    )

    reply = gateway_stack.gateway.client().completions.create(
        model="over-uds", prompt="a river", temperature=0, seed=1, max_tokens=8
    )

    assert reply.choices[0].text == direct.choices[0].text


def test_it_answers_embeddings(gateway_stack: GatewayStack) -> None:
    direct = gateway_stack.engine_client(gateway_stack.tcp).embeddings.create(
        model="sim/tcp", input="hello"
    )

    reply = gateway_stack.gateway.client().embeddings.create(model="chat", input="hello")

    assert reply.data[0].embedding == direct.data[0].embedding


def test_it_streams_the_same_content_as_the_engine_and_ends_the_stream(
    gateway_stack: GatewayStack,
) -> None:
    def streamed(client_model: tuple[object, str]) -> tuple[str, list[str | None]]:
        client, model = client_model
        stream = client.chat.completions.create(  # type: ignore[attr-defined]
            model=model, messages=MESSAGES, temperature=0, seed=11, max_tokens=20, stream=True
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, [c.choices[0].finish_reason for c in chunks if c.choices]

    direct_text, _ = streamed((gateway_stack.engine_client(gateway_stack.tcp), "sim/tcp"))
    text, finish_reasons = streamed((gateway_stack.gateway.client(), "chat"))

    assert text == direct_text
    assert len(text.split()) == 20
    assert finish_reasons[-1] == "length"


def test_it_streams_from_an_engine_on_a_unix_socket(gateway_stack: GatewayStack) -> None:
    stream = gateway_stack.gateway.client().completions.create(
        model="over-uds", prompt="x", temperature=0, seed=2, max_tokens=6, stream=True
    )
    direct = gateway_stack.engine_client(gateway_stack.uds).completions.create(
        model="sim/uds", prompt="x", temperature=0, seed=2, max_tokens=6
    )

    assert "".join(chunk.choices[0].text for chunk in stream) == direct.choices[0].text


def test_it_relays_events_as_the_engine_produces_them(gateway_stack: GatewayStack) -> None:
    # The slow engine makes a token every 50 ms: a buffering proxy would deliver all at once.
    stream = gateway_stack.gateway.client().completions.create(
        model="slow", prompt="x", max_tokens=6, stream=True
    )
    arrivals = [time.monotonic() for _chunk in stream]

    assert len(arrivals) >= 6
    assert arrivals[-1] - arrivals[0] > 0.15


def test_it_lists_and_retrieves_the_backends_models(gateway_stack: GatewayStack) -> None:
    client = gateway_stack.gateway.client()

    listed = [model.id for model in client.models.list()]
    retrieved = client.models.retrieve("chat-v1")

    assert {"chat", "over-uds", "slow", "sim/tcp"} <= set(listed)
    assert retrieved.id == "chat"


def test_it_holds_one_slot_per_request_and_releases_it(gateway_stack: GatewayStack) -> None:
    before = gateway_stack.gateway.counts()["over-uds"]
    client = gateway_stack.gateway.client()

    client.completions.create(model="over-uds", prompt="a", max_tokens=2)
    list(client.completions.create(model="over-uds", prompt="a", max_tokens=2, stream=True))

    after = gateway_stack.gateway.counts()["over-uds"]
    assert after["acquired"] - before["acquired"] == 2
    assert after["released"] - before["released"] == 2
    assert after["extra_releases"] == 0


def test_it_waits_for_a_slow_acquire_and_then_answers(gateway_stack: GatewayStack) -> None:
    started = time.monotonic()

    reply = gateway_stack.gateway.client().completions.create(
        model="switching", prompt="hi", max_tokens=3
    )

    assert time.monotonic() - started >= 0.4
    assert len(reply.choices[0].text.split()) == 3
    counts = gateway_stack.gateway.counts()["switching"]
    assert counts["acquired"] == counts["released"] >= 1


def test_it_rewrites_only_the_model_and_forwards_only_what_the_engine_needs(
    start_gateway: GatewayLauncher, echo_upstream: EchoUpstream
) -> None:
    gateway = start_gateway(
        [
            {"name": "public", "upstream": {"port": echo_upstream.port}, "served_name": "eng"},
            {"name": "eng", "upstream": {"port": echo_upstream.port}},
        ]
    )
    request = urllib.request.Request(
        f"{gateway.url}/v1/embeddings?x=1&y=%20z",
        data=b'{"model": "public", "n": 2, "input": "\\u00e9t\\u00e9"}',
        headers={
            "Authorization": "Bearer client-secret",
            "Cookie": "session=abc",
            "Accept": "application/json",
            "X-Request-Id": "req-1",
            "Content-Type": "application/json; charset=utf-8",
        },
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        echoed = json.loads(reply.read())
        upstream_header = reply.headers["X-Upstream"]
    verbatim = b'{"model":   "eng", "prompt": "keep",  "keep": "spacing"}'
    with urllib.request.urlopen(
        urllib.request.Request(f"{gateway.url}/v1/completions", data=verbatim, headers=JSON),
        timeout=5,
    ) as reply:
        echoed_verbatim = json.loads(reply.read())

    assert echoed["method"] == "POST"
    assert echoed["raw_path"] == "/v1/embeddings?x=1&y=%20z"
    assert json.loads(echoed["body"]) == {"model": "eng", "n": 2, "input": "été"}
    headers = echoed["headers"]
    assert "authorization" not in headers
    assert "cookie" not in headers
    assert headers["accept"] == "application/json"
    assert headers["x-request-id"] == "req-1"
    assert headers["content-type"] == "application/json"
    assert upstream_header == "echo"
    # No rewrite needed: the engine gets the client's bytes untouched.
    assert echoed_verbatim["body"] == verbatim.decode()
