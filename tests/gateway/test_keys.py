"""The gateway's key table and usage meter (pure: no Django, no network)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from llmux_site.gateway.errors import GatewayError
from llmux_site.gateway.keys import (
    KeyRecord,
    KeyTable,
    LocalWindow,
    UsageMeter,
    hash_secret,
    may_use,
    rate_limited,
)


def table(now: list[float], **record: Any) -> KeyTable:
    fields = {
        "key_id": 7,
        "secret_hash": hash_secret("s3cret"),
        "scopes": frozenset(),
        "rpm": None,
        "expires_at": None,
    } | record
    return KeyTable(required=True, records={"abcd": KeyRecord(**fields)}, clock=lambda: now[0])


def status(check: Any) -> int:
    with pytest.raises(GatewayError) as caught:
        check()
    return caught.value.status


def test_a_key_is_checked_by_its_prefix_and_secret() -> None:
    keys = table([0.0])
    assert keys.identify("Bearer llmux-abcd-s3cret") == keys.records["abcd"]
    assert status(lambda: keys.identify(None)) == 401
    assert status(lambda: keys.identify("Bearer llmux-abcd-wrong")) == 401
    assert status(lambda: keys.identify("Bearer llmux-zzzz-s3cret")) == 401
    assert status(lambda: keys.identify("Basic abc")) == 401
    # Keys not required: no key or a key that is not ours is anonymous; ours still counts.
    optional = table([0.0])
    optional.required = False
    assert optional.identify(None) is None
    assert optional.identify("Bearer sk-whatever") is None
    assert optional.identify("Bearer llmux-abcd-s3cret") == optional.records["abcd"]


def test_auto_on_loopback_requires_a_key_of_callers_beyond_it() -> None:
    keys = table([0.0])
    keys.required, keys.required_remote = False, True

    assert keys.identify(None, "127.0.0.1") is None
    assert keys.identify(None, "::1") is None
    assert keys.identify(None, None) is None  # a Unix socket is local
    assert status(lambda: keys.identify(None, "203.0.113.7")) == 401
    assert status(lambda: keys.identify("Bearer sk-whatever", "10.0.0.2")) == 401
    assert keys.identify("Bearer llmux-abcd-s3cret", "203.0.113.7") == keys.records["abcd"]


def test_scopes_and_expiry() -> None:
    now = [1000.0]
    names = {"a": "a", "b": "b", "alias-of-b": "b", "other-alias-of-b": "b", "c": "c"}
    scoped = table(now, scopes=frozenset({"a", "alias-of-b"})).records["abcd"]
    assert may_use(scoped, "a", names.get)
    # A scope grants its model by any of the model's names.
    assert may_use(scoped, "alias-of-b", names.get) and may_use(scoped, "b", names.get)
    assert may_use(scoped, "other-alias-of-b", names.get)
    assert not may_use(scoped, "c", names.get)
    assert not may_use(scoped, "no-such-model", names.get)
    unscoped = table(now).records["abcd"]
    assert may_use(unscoped, "no-such-model", names.get) and may_use(None, "c", names.get)
    expired = table(now, expires_at=999.0)
    assert status(lambda: expired.identify("Bearer llmux-abcd-s3cret")) == 401


def test_the_local_window_slides_over_the_last_minute_per_key() -> None:
    now = [1000.0]
    window = LocalWindow(clock=lambda: now[0])

    async def admit(key_id: int = 7) -> float | None:
        return await window.admit(key_id, 2)

    async def go() -> None:
        assert [await admit(), await admit()] == [None, None]
        now[0] += 0.5
        assert await admit() == 59.5  # the first request leaves the minute in 59.5 s
        assert await admit(key_id=8) is None  # another key has its own minute
        now[0] += 59.5  # the window moved past both earlier requests
        assert [await admit(), await admit(), await admit()] == [None, None, 60.0]

    asyncio.run(go())
    error = rate_limited(2, 59.5)
    assert error.status == 429 and (b"retry-after", b"60") in error.headers
    assert "2 requests per minute" in error.message
    assert (b"retry-after", b"1") in rate_limited(2, 0.0).headers


def run_meter(start: dict[str, Any], chunks: list[bytes]) -> dict[str, int] | None:
    meter = UsageMeter()
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def go() -> None:
        out = meter.wrap(send)
        await out(start)
        for chunk in chunks:
            await out({"type": "http.response.body", "body": chunk, "more_body": True})

    asyncio.run(go())
    assert len(sent) == len(chunks) + 1  # everything still reaches the client
    return meter.finish()


def test_usage_is_read_from_a_json_answer_split_in_chunks() -> None:
    body = json.dumps({"id": "x", "usage": {"prompt_tokens": 5, "completion_tokens": 9}})
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json")],
    }
    raw = body.encode()
    assert run_meter(start, [raw[:10], raw[10:]]) == {"prompt_tokens": 5, "completion_tokens": 9}


def test_usage_is_read_from_a_streams_usage_chunk_cut_anywhere() -> None:
    events = (
        b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
        b"data: [DONE]\n\n"
    )
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/event-stream")],
    }
    for cut in range(1, len(events)):
        usage = run_meter(start, [events[:cut], events[cut:]])
        assert usage == {"prompt_tokens": 3, "completion_tokens": 2}, cut


def test_usage_is_read_from_responses_whole_and_streamed() -> None:
    usage = {"input_tokens": 7, "output_tokens": 4, "total_tokens": 11}
    whole = json.dumps({"object": "response", "usage": usage}).encode()
    json_start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json")],
    }
    assert run_meter(json_start, [whole]) == {"prompt_tokens": 7, "completion_tokens": 4}
    completed = json.dumps({"type": "response.completed", "response": {"usage": usage}})
    events = (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta"}\n\n'
        + b"event: response.completed\ndata: "
        + completed.encode()
        + b"\n\n"
    )
    sse_start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/event-stream")],
    }
    assert run_meter(sse_start, [events]) == {"prompt_tokens": 7, "completion_tokens": 4}


def test_an_error_answer_has_no_usage() -> None:
    start = {"type": "http.response.start", "status": 400, "headers": []}
    assert run_meter(start, [b'{"usage": {"prompt_tokens": 1}}']) is None
