"""Asking the engine for a stream's usage on a client's behalf, and hiding the answer
from the client (pure: no network)."""

from __future__ import annotations

import json

import pytest

from llmux_site.gateway.stream_usage import UsageEventFilter, ask_for_usage

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
CONTENT = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
USAGE_EVENT = b"data: " + json.dumps({"choices": [], "usage": USAGE}).encode() + b"\n\n"
DONE = b"data: [DONE]\n\n"


@pytest.mark.parametrize(
    ("path", "payload", "expected"),
    [
        ("/v1/chat/completions", {"stream": True}, {"include_usage": True}),
        ("/v1/completions", {"stream": True}, {"include_usage": True}),
        (
            "/v1/chat/completions",
            {"stream": True, "stream_options": {"continuous_usage_stats": False}},
            {"continuous_usage_stats": False, "include_usage": True},
        ),
        (
            "/v1/chat/completions",
            {"stream": True, "stream_options": {"include_usage": False}},
            {"include_usage": True},
        ),
    ],
)
def test_a_stream_that_does_not_ask_for_usage_is_made_to(
    path: str, payload: dict[str, object], expected: dict[str, object]
) -> None:
    asked = ask_for_usage(path, {"model": "m", **payload})
    assert asked is not None
    assert asked["stream_options"] == expected
    assert asked["model"] == "m" and asked["stream"] is True


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/v1/chat/completions", {"stream": False}),
        ("/v1/chat/completions", {}),
        ("/v1/chat/completions", {"stream": True, "stream_options": {"include_usage": True}}),
        ("/v1/responses", {"stream": True}),  # its usage is in response.completed
        ("/v1/embeddings", {"stream": True}),
    ],
)
def test_nothing_is_added_where_the_usage_is_there_or_cannot_be_asked_for(
    path: str, payload: dict[str, object]
) -> None:
    assert ask_for_usage(path, payload) is None


def filtered(stream: bytes, cuts: list[int]) -> bytes:
    hide = UsageEventFilter()
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    out = [hide.feed(piece, last=False) for piece in pieces[:-1]]
    return b"".join([*out, hide.feed(pieces[-1], last=True)])


def test_the_usage_event_is_removed_wherever_the_chunks_are_cut() -> None:
    stream = CONTENT + CONTENT + USAGE_EVENT + DONE
    for first in range(len(stream) + 1):
        for second in (first, min(first + 7, len(stream)), len(stream)):
            assert filtered(stream, [first, second]) == CONTENT + CONTENT + DONE, (first, second)


def test_everything_else_passes_byte_for_byte() -> None:
    # A content chunk that mentions usage, a chunk with a null usage, comments, CRLF.
    stream = (
        b": keep-alive\r\n\r\n"
        + b'data: {"choices":[{"index":0,"delta":{"content":"\\"usage\\""}}]}\n\n'
        + b'data: {"choices":[{"index":0,"delta":{}}],"usage":null}\n\n'
        + b'data: {"choices":[],"usage":"not an object"}\n\n'
        + DONE
    )
    assert filtered(stream, [5, 40]) == stream


def test_a_usage_event_with_crlf_line_ends_is_removed_whole() -> None:
    crlf = USAGE_EVENT.replace(b"\n", b"\r\n")
    assert filtered(CONTENT + crlf + DONE, [len(CONTENT) + 3]) == CONTENT + DONE


def test_the_usage_chunk_s_fingerprint_goes_onto_the_finishing_chunk() -> None:
    """vLLM puts system_fingerprint on the last chunk: without our usage chunk, the client
    gets it on the chunk that finishes, as it would have without our asking."""
    stream = (
        b'data: {"id":"c","choices":[{"index":0,"text":"a","finish_reason":null}]}\n\n'
        b'data: {"id":"c","choices":[{"index":0,"text":"b","finish_reason":"length"}]}\n\n'
        b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":1},"system_fingerprint":"fp"}'
        b"\n\ndata: [DONE]\n\n"
    )
    for cut in range(1, len(stream)):  # whatever the chunk boundaries
        relay = UsageEventFilter()
        out = relay.feed(stream[:cut], last=False) + relay.feed(stream[cut:], last=True)
        events = [line[6:] for line in out.split(b"\n\n") if line.startswith(b"data: ")]
        assert events[-1] == b"[DONE]"
        first, finishing = (json.loads(e) for e in events[:-1])
        assert "system_fingerprint" not in first
        assert finishing["system_fingerprint"] == "fp"
        assert finishing["choices"][0]["text"] == "b"
        assert b'"usage"' not in out


def test_a_token_streams_at_once_and_only_the_finishing_chunk_waits() -> None:
    relay = UsageEventFilter()
    token = b'data: {"id":"c","choices":[{"index":0,"text":"a","finish_reason":null}]}\n\n'
    assert relay.feed(token, last=False) == token
    finishing = b'data: {"id":"c","choices":[{"index":0,"text":"b","finish_reason":"stop"}]}\n\n'
    assert relay.feed(finishing, last=False) == b""  # held: a usage chunk may follow
    assert relay.feed(b"data: [DONE]\n\n", last=True) == finishing + b"data: [DONE]\n\n"
