"""In-flight requests: the gate they pass for every token, and how sleep ends or pauses them."""

from __future__ import annotations

import asyncio
import time

from llmux_site.simulator.errors import RequestAborted


class Ticket:
    """One admitted inference request; sleeping with mode=abort sets `aborted`."""

    def __init__(self) -> None:
        self._aborted = asyncio.Event()
        self.reason = ""
        self.waiting = False

    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()

    def abort(self, reason: str) -> None:
        self.reason = reason
        self._aborted.set()

    def check(self) -> None:
        """Raise RequestAborted if the request was aborted."""
        if self._aborted.is_set():
            raise RequestAborted(self.reason)

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less if the request is aborted meanwhile (then raise)."""
        self.check()
        if seconds > 0:
            try:
                await asyncio.wait_for(self._aborted.wait(), seconds)
            except TimeoutError:
                return
        self.check()

    async def until_aborted(self) -> None:
        """Return once the request is aborted."""
        await self._aborted.wait()

    async def stall(self) -> None:
        """Hang until aborted (an injected decode stall), then raise."""
        await self._aborted.wait()
        self.check()


class Inflight:
    """The requests being served and the gate that sleep closes to pause their scheduling."""

    def __init__(self) -> None:
        self._tickets: set[Ticket] = set()
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False
        # Time with at least one request in flight: the simulated GPU's busy time.
        self._busy_since: float | None = None
        self._busy_total = 0.0

    @property
    def count(self) -> int:
        return len(self._tickets)

    @property
    def waiting(self) -> int:
        return sum(1 for t in self._tickets if t.waiting)

    @property
    def running(self) -> int:
        return self.count - self.waiting

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    def admit(self) -> Ticket:
        ticket = Ticket()
        if not self._tickets:
            self._busy_since = time.monotonic()
        self._tickets.add(ticket)
        self._idle.clear()
        return ticket

    def release(self, ticket: Ticket) -> None:
        self._tickets.discard(ticket)
        if not self._tickets:
            self._idle.set()
            if self._busy_since is not None:
                self._busy_total += time.monotonic() - self._busy_since
                self._busy_since = None

    def busy_seconds(self) -> float:
        """Seconds so far (on the monotonic clock) with at least one request in flight."""
        ongoing = time.monotonic() - self._busy_since if self._busy_since is not None else 0.0
        return self._busy_total + ongoing

    async def pass_gate(self, ticket: Ticket) -> bool:
        """Wait while scheduling is paused; True when the request had to wait."""
        ticket.check()
        if self._open.is_set():
            return False
        ticket.waiting = True
        aborted = asyncio.ensure_future(ticket.until_aborted())
        opened = asyncio.ensure_future(self._open.wait())
        try:
            await asyncio.wait({aborted, opened}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
            opened.cancel()
            ticket.waiting = False
        ticket.check()
        return True

    def pause(self) -> None:
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def abort_all(self, reason: str) -> None:
        for ticket in self._tickets:
            ticket.abort(reason)

    async def drain(self) -> None:
        """Refuse new requests and wait until the in-flight ones finish."""
        self.draining = True
        try:
            await self._idle.wait()
        finally:
            self.draining = False
