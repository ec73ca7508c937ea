"""The status websocket's messages, typed: what `/ws/status/` sends the page, what the page
may send back, and the channel-layer event that carries a snapshot to every consumer.

On the wire a message to the page is `{"kind": ..., "data": ...}` (static/llmux/dashboard.js
reads it); the page rebuilds from the snapshot it gets on every (re)connect.
"""

from __future__ import annotations

import json
from typing import Literal, TypedDict

from models_app.snapshot import StatusSnapshot


class SnapshotMessage(TypedDict):
    """The whole status, on connect and after every change (models_app.snapshot)."""

    kind: Literal["snapshot"]
    data: StatusSnapshot


class LogLines(TypedDict):
    """Whole lines appended to the followed log, the offset after them, when they were read."""

    lines: list[str]
    offset: int
    at: str


class LogMessage(TypedDict):
    """Lines appended to the followed engine log since the last message."""

    kind: Literal["log"]
    data: LogLines


class FollowLog(TypedDict):
    """From the page: follow this model's engine log from byte `offset` on (the offset the
    page's lines end at; sent once per connection)."""

    follow_log: str
    offset: int


class SnapshotEvent(TypedDict):
    """A snapshot for every consumer of the `status` group, sent on the channel layer
    (Channels calls the consumer's method named after `type`, dots as underscores)."""

    type: Literal["status.snapshot"]
    snapshot: StatusSnapshot


def snapshot_message(state: StatusSnapshot) -> SnapshotMessage:
    return {"kind": "snapshot", "data": state}


def log_message(lines: list[str], offset: int, at: str) -> LogMessage:
    return {"kind": "log", "data": {"lines": lines, "offset": offset, "at": at}}


def snapshot_event(state: StatusSnapshot) -> SnapshotEvent:
    return {"type": "status.snapshot", "snapshot": state}


def follow_request(text: str | None) -> FollowLog | None:
    """The FollowLog message the page sent; None for anything else (a missing or bad
    offset reads as 0: the whole log is then followed from its start)."""
    try:
        request = json.loads(text or "")
    except ValueError:
        return None
    if not isinstance(request, dict) or not isinstance(request.get("follow_log"), str):
        return None
    offset = request.get("offset")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        offset = 0
    follow: FollowLog = {"follow_log": request["follow_log"], "offset": offset}
    return follow
