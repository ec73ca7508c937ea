"""The seam between the gateway's hot path and whatever knows which engines are active.

The Django-backed backend (registry, runtime state, switching) lives outside this package;
``StaticBackend`` serves a fixed set of always-active routes for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmux_site.core.addresses import ListenAddress
from llmux_site.gateway.errors import GatewayError


@dataclass(frozen=True, slots=True)
class Route:
    """Where requests for a public model name go, and under which name the engine knows it."""

    model: str
    upstream: ListenAddress
    served_name: str
    rewrite_model: bool


class Slot(Protocol):
    """One admitted request on an active model; ``release()`` exactly once when it ends.

    A slot may be given *early*, while the model's engine passes its readiness probe: the
    request is sent at once, and ``confirmed()`` says when its answer may go to the client.
    """

    @property
    def route(self) -> Route: ...

    async def confirmed(self) -> None:
        """Return once the engine may answer this request (at once unless early).

        Raises ``GatewayError``: 503 when the switch that was bringing the engine up
        failed (with its reason), 504 when the request's deadline passed first.
        """
        ...

    def release(self) -> None: ...


class GatewayBackend(Protocol):
    """What the gateway asks about models; every call on the hot path must be cheap."""

    def resolve(self, name: str) -> str | None:
        """The public model name for a name or alias, or None; sync and cached."""
        ...

    async def acquire(self, model: str, *, deadline: float) -> Slot:
        """A slot on ``model``: at once when it is active, else after a switch.

        ``deadline`` is on the event loop's clock (``loop.time()``, i.e. ``time.monotonic()``).
        Raises ``GatewayError`` (503 when the switch failed, with its reason; 504 when the
        deadline passed). Must be cancellation-safe: a cancelled acquire holds no slot.
        """
        ...

    async def list_models(self) -> list[dict[str, Any]]:
        """OpenAI ``/v1/models`` data entries."""
        ...

    def request_timeout(self) -> float:
        """Seconds a request may wait for its model to become active."""
        ...

    async def upstream_failed(self, model: str) -> bool:
        """The engine of ``model`` could not be reached before answering anything.

        True when the backend found the engine dead and recorded it, so the request may
        acquire again (which brings the engine back) and be sent once more.
        """
        ...


@dataclass(eq=False, slots=True)
class StaticSlot:
    """A slot handed out by ``StaticBackend``; it counts releases, including extra ones."""

    route: Route
    backend: StaticBackend
    released: bool = False

    async def confirmed(self) -> None:
        return None  # always active: never early

    def release(self) -> None:
        counts = self.backend.counts[self.route.model]
        if self.released:
            counts.extra_releases += 1
            return
        self.released = True
        counts.released += 1


@dataclass(slots=True)
class SlotCounts:
    """Per-model bookkeeping of ``StaticBackend`` (tests assert on it)."""

    acquired: int = 0
    released: int = 0
    extra_releases: int = 0
    failed: int = 0


@dataclass
class StaticBackend:
    """Routes given up front, always active; optional per-model acquire delay or failure.

    ``acquire_delays[model]`` seconds pass before the slot is given (a stand-in for a
    switch); a delay past the deadline waits until the deadline and raises 504.
    ``acquire_failures[model]`` is the reason of a 503 after that delay.
    """

    routes: Iterable[Route]
    aliases: Mapping[str, str] = field(default_factory=dict)
    acquire_delays: Mapping[str, float] = field(default_factory=dict)
    acquire_failures: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    counts: dict[str, SlotCounts] = field(init=False)
    _routes: dict[str, Route] = field(init=False)
    _names: dict[str, str] = field(init=False)
    _created: int = field(init=False)

    def __post_init__(self) -> None:
        self._routes = {route.model: route for route in self.routes}
        self._names = {name: name for name in self._routes}
        for alias, model in self.aliases.items():
            if model not in self._routes:
                raise ValueError(f"alias {alias!r} names unknown model {model!r}")
            self._names[alias] = model
        self.counts = {name: SlotCounts() for name in self._routes}
        self._created = int(time.time())

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StaticBackend:
        """Build from plain data (JSON), as the test app and the benchmark pass it.

        ``{"models": [{"name", "upstream": {"port"} | {"uds"}, "served_name"?,
        "aliases"?, "acquire_delay"?, "acquire_failure"?}], "request_timeout"?}``;
        the model is rewritten whenever the served name differs from the public one.
        """
        routes: list[Route] = []
        aliases: dict[str, str] = {}
        delays: dict[str, float] = {}
        failures: dict[str, str] = {}
        for entry in config["models"]:
            name = entry["name"]
            served = entry.get("served_name", name)
            upstream = ListenAddress(**entry["upstream"])
            routes.append(Route(name, upstream, served, rewrite_model=served != name))
            aliases.update(dict.fromkeys(entry.get("aliases", ()), name))
            if "acquire_delay" in entry:
                delays[name] = float(entry["acquire_delay"])
            if "acquire_failure" in entry:
                failures[name] = str(entry["acquire_failure"])
        timeout = float(config.get("request_timeout", 30.0))
        return cls(routes, aliases, delays, failures, timeout)

    def resolve(self, name: str) -> str | None:
        return self._names.get(name)

    async def acquire(self, model: str, *, deadline: float) -> Slot:
        delay = self.acquire_delays.get(model)
        if delay:
            loop = asyncio.get_running_loop()
            remaining = deadline - loop.time()
            if delay > remaining:
                await asyncio.sleep(max(remaining, 0.0))
                self.counts[model].failed += 1
                raise GatewayError.timed_out(model, self.timeout)
            await asyncio.sleep(delay)
        reason = self.acquire_failures.get(model)
        if reason is not None:
            self.counts[model].failed += 1
            raise GatewayError.switch_failed(model, reason)
        self.counts[model].acquired += 1
        return StaticSlot(self._routes[model], self)

    async def list_models(self) -> list[dict[str, Any]]:
        return [
            {"id": name, "object": "model", "created": self._created, "owned_by": "llmux"}
            for name in self._routes
        ]

    def request_timeout(self) -> float:
        return self.timeout

    async def upstream_failed(self, model: str) -> bool:
        return False  # static routes cannot bring an engine back

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Counts per model, as plain data."""
        return {
            name: {
                "acquired": c.acquired,
                "released": c.released,
                "extra_releases": c.extra_releases,
                "failed": c.failed,
            }
            for name, c in self.counts.items()
        }
