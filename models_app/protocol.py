"""The web↔worker protocol: every message on the host bus, each kind defined once here.

Web processes, workers and the checkpoint store coordinate through the database, the
truth, and hint at each change they commit on the host bus (llmux_site/core/notify.py,
carried between hosts as is by core/notify_relay.py when Redis is configured), so a waiter
looks at once instead of at its next poll. On the wire a message is its kind word, then,
for the kinds that carry one, a JSON object of named fields that saves the receiver a
read: `drained {"instance":"web-1","model":"alpha","token":4}`. A payload is a shortcut,
never the only copy: everything it says is in the database.

Each kind is one frozen dataclass that encodes itself; `decode` refuses what is no
message of this protocol (an unknown kind, a datagram cut mid-JSON, a missing field, a
field of the wrong type), so a listener holds either a typed message or nothing, and then
falls back to reading the database. docs/SWITCHING.md describes each message.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from functools import cache
from typing import Any, ClassVar, NamedTuple, Self, TypeVar, get_type_hints

from django.conf import settings
from django.db import transaction

from llmux_site.core.notify import LocalBus
from models_app.models import EngineState

T = TypeVar("T")
ENGINE_STATES = frozenset(EngineState.values)


class BadMessage(ValueError):
    """Bytes from the bus that are no message of this protocol."""


@dataclasses.dataclass(frozen=True)
class Message:
    """A bus message: a kind word, and the named fields of its class as a JSON object."""

    KIND: ClassVar[bytes]

    def payload(self) -> dict[str, Any] | None:
        """The JSON object sent after the kind word; None for a kind with no fields."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return values or None

    def encode(self) -> bytes:
        payload = self.payload()
        if payload is None:
            return self.KIND
        return self.KIND + b" " + json.dumps(payload, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """The message `data` encodes; BadMessage if it is not a well-formed one of this kind."""
        kind, _, rest = data.partition(b" ")
        if kind != cls.KIND:
            raise BadMessage(f"not a {cls.KIND.decode()} message: {data[:40]!r}")
        return cls.from_payload(_json_object(rest) if rest else None)

    @classmethod
    def from_payload(cls, payload: Mapping[str, object] | None) -> Self:
        """Each declared field, of its declared type (fields a newer sender adds are ignored)."""
        types = _field_types(cls)
        if payload is None:
            if types:
                raise BadMessage(f"a {cls.KIND.decode()} message needs {', '.join(types)}")
            return cls()
        if not types:
            raise BadMessage(f"a {cls.KIND.decode()} message carries no payload")
        return cls(**{name: _field(payload, name, kind) for name, kind in types.items()})


# -- the messages ------------------------------------------------------------------------


class CommittedState(NamedTuple):
    """An engine's row as a transaction committed it."""

    state: str  # an EngineState value
    drain_token: int
    version: int  # the row's compare-and-set version: a late notice loses to a newer read


@dataclasses.dataclass(frozen=True)
class EngineStates(Message):
    """Engine rows a transaction wrote (sent after its commit): web processes update their
    cache of states and drain tokens without a read."""

    KIND = b"runtime"
    states: Mapping[str, CommittedState]

    def payload(self) -> dict[str, Any]:
        return {"states": {name: state._asdict() for name, state in self.states.items()}}

    @classmethod
    def from_payload(cls, payload: Mapping[str, object] | None) -> Self:
        entries = _field(payload, "states", dict)
        states = {str(name): _committed_state(entry) for name, entry in entries.items()}
        return cls(states)


@dataclasses.dataclass(frozen=True)
class Wanted(Message):
    """A web process is about to queue a switch to `model_id`: the group's lingering worker
    reads the group's state while the request is written."""

    KIND = b"wanted"
    group: str
    model_id: int


@dataclasses.dataclass(frozen=True)
class Queued(Message):
    """A switch or an eviction was queued: the group's lingering worker looks at its queue."""

    KIND = b"queued"


@dataclasses.dataclass(frozen=True)
class PresenceReported(Message):
    """A web process wrote its row (waiting demand, drain acknowledgements): a settling or
    draining worker reads the rows again."""

    KIND = b"presence"


@dataclasses.dataclass(frozen=True)
class Drained(Message):
    """Web process `instance` has nothing in flight for `model`, which drains under `token`;
    sent before its row says so, so the draining worker need not read it."""

    KIND = b"drained"
    instance: str
    model: str
    token: int


@dataclasses.dataclass(frozen=True)
class Probing(Message):
    """The start of `model` recorded at row `version` answers /health and its readiness
    probe runs: web processes send the requests that waited for it (early slots)."""

    KIND = b"probing"
    model: str
    version: int


@dataclasses.dataclass(frozen=True)
class RegistryChanged(Message):
    """A model, an alias, an API key or the registry settings changed: web processes reload."""

    KIND = b"registry"


@dataclasses.dataclass(frozen=True)
class SwapChanged(Message):
    """A swap row opened, moved to another phase or finished: the dashboard refreshes."""

    KIND = b"swap"


@dataclasses.dataclass(frozen=True)
class ImageProgress(Message):
    """A checkpoint image's progress or status changed: the dashboard refreshes."""

    KIND = b"checkpoint"
    image: int
    model: str
    status: str  # an ImageStatus value (checkpoints_app)
    done: int  # bytes written or read so far
    total: int


@dataclasses.dataclass(frozen=True)
class CancelRequest(Message):
    """An operator cancels request `request` (an id from `LiveRequests`) in flight in web
    process `instance`; that process cancels it, and its next report no longer lists it."""

    KIND = b"cancel"
    instance: str
    request: str


@dataclasses.dataclass(frozen=True)
class CaptureChanged(Message):
    """An admin turned the capture of prompt and answer text on or off (`ActivitySettings`)."""

    KIND = b"capture"
    capture: bool


MESSAGES: tuple[type[Message], ...] = (
    EngineStates,
    Wanted,
    Queued,
    PresenceReported,
    Drained,
    Probing,
    RegistryChanged,
    SwapChanged,
    ImageProgress,
    CancelRequest,
    CaptureChanged,
)
BY_KIND: dict[bytes, type[Message]] = {message.KIND: message for message in MESSAGES}


def decode(data: bytes) -> Message:
    """The message `data` encodes, of whichever kind; BadMessage if it is none."""
    kind = data.partition(b" ")[0]
    message = BY_KIND.get(kind)
    if message is None:
        raise BadMessage(f"unknown kind {kind[:40]!r}")
    return message.decode(data)


def read(data: bytes | None) -> Message | None:
    """`decode`, or None for what it refuses: the listener then reads the database."""
    try:
        return decode(data) if data is not None else None
    except BadMessage:
        return None


# -- the bus -----------------------------------------------------------------------------


@cache
def bus() -> LocalBus:
    """This host's bus; with Redis, relayed to and from the cluster's other hosts."""
    directory = settings.LLMUX_DIRS["run"] / "notify"
    if not settings.REDIS_URL:
        return LocalBus(directory)
    from llmux_site.core.notify_relay import RedisRelay, origin_of

    channel = f"{settings.Q_CLUSTER['name']}:notify"
    return LocalBus(directory, RedisRelay(settings.REDIS_URL, channel, origin_of(directory)))


def publish(message: Message) -> None:
    """Send `message` now: what it announces is committed already (or nothing is written)."""
    bus().publish(message.encode())


def after_commit(message: Message) -> None:
    """Send `message` once the surrounding transaction commits (at once outside one)."""
    data = message.encode()
    transaction.on_commit(lambda: bus().publish(data))


# -- decoding helpers --------------------------------------------------------------------


def _json_object(text: bytes) -> dict[str, object]:
    try:
        payload = json.loads(text)
    except ValueError:  # e.g. a datagram cut at the listener's buffer size
        raise BadMessage(f"a payload that does not parse: {text[:40]!r}") from None
    if not isinstance(payload, dict):
        raise BadMessage(f"a payload that is no JSON object: {text[:40]!r}")
    return payload


_FIELD_TYPES: dict[type[Message], dict[str, type]] = {}


def _field_types(message: type[Message]) -> dict[str, type]:
    """Each field's type, read once per class (the annotations are strings until then)."""
    types = _FIELD_TYPES.get(message)
    if types is None:
        hints = get_type_hints(message)
        types = _FIELD_TYPES[message] = {f.name: hints[f.name] for f in dataclasses.fields(message)}
    return types


def _field(payload: Mapping[str, object] | None, name: str, kind: type[T]) -> T:
    value = payload.get(name) if payload is not None else None
    # JSON's true is an int to Python, never a count or a version to this protocol.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadMessage(f"field {name!r} is not a {kind.__name__}: {value!r:.40}")
    return value


def _committed_state(entry: object) -> CommittedState:
    if not isinstance(entry, dict):
        raise BadMessage(f"an engine state that is no JSON object: {entry!r:.40}")
    state = _field(entry, "state", str)
    if state not in ENGINE_STATES:
        raise BadMessage(f"no engine state: {state!r:.40}")
    return CommittedState(state, _field(entry, "drain_token", int), _field(entry, "version", int))
