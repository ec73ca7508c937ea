"""The web↔worker protocol: every bus message survives its round trip and refuses garbage."""

from __future__ import annotations

import pytest

from models_app import protocol
from models_app.protocol import (
    BadMessage,
    CancelRequest,
    CaptureChanged,
    CommittedState,
    Drained,
    EngineStates,
    ImageProgress,
    Message,
    PresenceReported,
    Probing,
    Queued,
    RegistryChanged,
    SwapChanged,
    Wanted,
)

# One of each kind; a kind added to the protocol without one here fails the test below.
EXAMPLES: list[Message] = [
    EngineStates(
        {"alpha": CommittedState("draining", 7, 3), "beta": CommittedState("running", 0, 12)}
    ),
    Wanted(group="gpu0", model_id=4),
    Queued(),
    PresenceReported(),
    Drained(instance="web-1:42", model="alpha", token=7),
    Probing(model="alpha", version=3),
    RegistryChanged(),
    SwapChanged(),
    ImageProgress(image=9, model="alpha", status="writing", done=1024, total=4096),
    CancelRequest(instance="3f2a", request="1a2b-17"),
    CaptureChanged(capture=True),
]

# For each kind, bytes that look like it but are no message of it.
GARBAGE: dict[type[Message], list[bytes]] = {
    EngineStates: [
        b"runtime",  # the states are the point
        b'runtime {"states":{"alpha":{"state":"runn',  # a datagram cut mid-JSON
        b'runtime {"states":{"alpha":["running",0,1]}}',  # positional, as it once was
        b'runtime {"states":{"alpha":{"state":"dozing","drain_token":0,"version":1}}}',
        b'runtime {"states":{"alpha":{"state":"running","drain_token":"0","version":1}}}',
        b'runtime {"states":{"alpha":{"state":"running","drain_token":0}}}',
        b'runtime {"states":[]}',
    ],
    Wanted: [
        b"wanted",
        b'wanted {"group":"gpu0"}',
        b'wanted {"group":"gpu0","model_id":"4"}',
        b'wanted {"group":"gpu0","model_id":true}',  # JSON's true is no model id
        b'wanted ["gpu0",4]',
    ],
    Queued: [b"queued {}", b"queued [1]", b"queued nonsense"],
    PresenceReported: [b'presence {"instance":"web-1"}'],
    Drained: [
        b"drained",
        b'drained ["web-1:42","alpha",7]',  # positional, as it once was
        b'drained {"instance":"web-1:42","model":"alpha"}',
        b'drained {"instance":"web-1:42","model":"alpha","token":7.5}',
        b'drained {"instance":null,"model":"alpha","token":7}',
    ],
    Probing: [b"probing", b'probing {"alpha":3}', b'probing {"model":"alpha","version":"3"}'],
    RegistryChanged: [b"registry 1"],
    SwapChanged: [b"swap {}"],
    ImageProgress: [
        b"checkpoint",
        b'checkpoint {"image":9,"model":"alpha","status":"writing","done":1024}',
        b'checkpoint {"image":"9","model":"alpha","status":"writing","done":1,"total":2}',
    ],
    CancelRequest: [
        b"cancel",
        b'cancel {"instance":"3f2a"}',
        b'cancel {"instance":"3f2a","request":17}',
    ],
    CaptureChanged: [b"capture", b'capture {"capture":1}', b'capture {"capture":"on"}'],
}


def test_every_kind_has_an_example_and_garbage_here() -> None:
    assert {type(m) for m in EXAMPLES} == set(protocol.MESSAGES) == set(GARBAGE)
    assert len(protocol.BY_KIND) == len(protocol.MESSAGES)  # no kind word used twice


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_a_message_survives_its_round_trip(message: Message) -> None:
    data = message.encode()
    assert data.split(b" ")[0] == message.KIND  # the transport filters on the kind word
    assert type(message).decode(data) == message
    assert protocol.decode(data) == message


def test_a_message_without_fields_is_its_bare_kind() -> None:
    assert Queued().encode() == b"queued"
    assert protocol.decode(b"queued") == Queued()


def test_a_payload_names_its_fields() -> None:
    assert Drained(instance="w", model="alpha", token=7).encode() == (
        b'drained {"instance":"w","model":"alpha","token":7}'
    )
    assert EngineStates({"alpha": CommittedState("running", 0, 1)}).encode() == (
        b'runtime {"states":{"alpha":{"state":"running","drain_token":0,"version":1}}}'
    )


@pytest.mark.parametrize(
    ("kind", "data"),
    [(kind, data) for kind, examples in GARBAGE.items() for data in examples],
    ids=lambda value: value.__name__ if isinstance(value, type) else "",
)
def test_a_malformed_message_is_refused_not_trusted(kind: type[Message], data: bytes) -> None:
    with pytest.raises(BadMessage):
        kind.decode(data)
    with pytest.raises(BadMessage):
        protocol.decode(data)
    assert protocol.read(data) is None  # a listener then reads the database


def test_an_unknown_kind_or_another_kind_is_refused() -> None:
    with pytest.raises(BadMessage):
        protocol.decode(b"gossip {}")
    with pytest.raises(BadMessage):
        Drained.decode(b"queued")
    assert protocol.read(b"") is None and protocol.read(None) is None


def test_fields_a_newer_sender_adds_are_ignored() -> None:
    data = b'probing {"model":"alpha","version":3,"host":"gpu-2"}'
    assert protocol.decode(data) == Probing(model="alpha", version=3)
