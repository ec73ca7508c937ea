"""Bus messages carry a kind and, optionally, a JSON payload that saves a read."""

from __future__ import annotations

from models_app.services import notify


def test_a_payload_survives_the_round_trip() -> None:
    data = notify.message(notify.RUNTIME, {"alpha": ["draining", 7], "beta": ["running", None]})
    assert data.startswith(b"runtime ")
    assert notify.parse(data) == (
        notify.RUNTIME,
        {"alpha": ["draining", 7], "beta": ["running", None]},
    )


def test_a_bare_kind_has_no_payload() -> None:
    assert notify.message(notify.QUEUED) == b"queued"
    assert notify.parse(b"queued") == (b"queued", None)


def test_a_payload_that_does_not_parse_is_dropped_not_trusted() -> None:
    # A datagram cut at the listener's buffer size ends mid-JSON.
    assert notify.parse(b'runtime {"alpha": ["runn') == (b"runtime", None)
