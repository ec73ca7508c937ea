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


class LogMessage(TypedDict):
    """Lines appended to the followed engine log since the last message."""

    kind: Literal["log"]
    data: list[str]


class FollowLog(TypedDict):
    """From the page: follow this model's engine log from now on."""

    follow_log: str


class SnapshotEvent(TypedDict):
    """A snapshot for every consumer of the `status` group, sent on the channel layer
    (Channels calls the consumer's method named after `type`, dots as underscores)."""

    type: Literal["status.snapshot"]
    snapshot: StatusSnapshot


def snapshot_message(state: StatusSnapshot) -> SnapshotMessage:
    return {"kind": "snapshot", "data": state}


def log_message(lines: list[str]) -> LogMessage:
    return {"kind": "log", "data": lines}


def snapshot_event(state: StatusSnapshot) -> SnapshotEvent:
    return {"type": "status.snapshot", "snapshot": state}


def followed_model(text: str | None) -> str | None:
    """The model a FollowLog message from the page names; None for anything else."""
    try:
        request = json.loads(text or "")
    except ValueError:
        return None
    if isinstance(request, dict) and isinstance(request.get("follow_log"), str):
        follow: FollowLog = {"follow_log": request["follow_log"]}
        return follow["follow_log"]
    return None
