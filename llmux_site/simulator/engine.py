"""The simulated engine's state machine: awake, sleeping at level 0/1/2, partial wakes, faults."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

from llmux_site.core.gpu_ledger import LedgerWriter
from llmux_site.simulator import textgen
from llmux_site.simulator.config import SimConfig
from llmux_site.simulator.errors import ApiError
from llmux_site.simulator.faults import Faults
from llmux_site.simulator.inflight import Inflight, Ticket
from llmux_site.simulator.weights import MemoryBackend, WeightsLocation, WeightsSource

TAGS = ("weights", "kv_cache")
SLEEP_MODES = ("abort", "wait", "keep")
RPC_METHODS = ("reload_weights", "suspend_nccl", "resume_nccl")


def log(message: str) -> None:
    """One human line on stderr (never per token)."""
    print(f"llmux-sim[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def crash_now(step: str) -> NoReturn:
    """Die like a crashed engine: no cleanup, no ledger removal, exit status 1."""
    log(f"injected crash at {step}")
    os._exit(1)


async def hang() -> NoReturn:
    """Never answer (until the client disconnects and aiohttp cancels the handler)."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


class Engine:
    """One simulated engine. Control calls are serialized; inference runs alongside them."""

    def __init__(
        self,
        config: SimConfig,
        memory: MemoryBackend,
        source: WeightsSource,
        ledger: LedgerWriter | None,
        *,
        crash: Callable[[str], NoReturn] = crash_now,
    ) -> None:
        self.config = config
        self.memory = memory
        self.source = source
        self.faults: Faults = config.faults
        self.inflight = Inflight()
        self.sleep_level: int | None = None
        self.sleeping_tags: set[str] = set()
        self.nccl_suspended = False
        self.expected_checksum: str | None = None
        self.request_counts: dict[str, int] = {}
        self.counters = {"sleeps": 0, "wakes": 0, "reloads": 0, "prefix_cache_resets": 0}
        self.usage = {"requests": 0, "prompt_tokens": 0, "generation_tokens": 0}
        self._ledger = ledger
        self._crash = crash
        self._noop_sleep = False
        self._control = asyncio.Lock()

    # -- memory -------------------------------------------------------------------------

    async def _memory(self, operation: Callable[[], None]) -> None:
        # Copies and file reads can take seconds with real sizes: keep /health answering.
        await asyncio.to_thread(operation)
        if self._ledger is not None:
            self._ledger.update(self.memory.device_bytes)

    async def load(self) -> None:
        """Initial load: weights from the file, expected checksum, KV cache."""
        await self._memory(lambda: self.memory.load_weights(self.source))
        self.expected_checksum = await asyncio.to_thread(self.memory.weights_checksum)
        await self._memory(lambda: self.memory.allocate_kv(self.config.kv_bytes))

    async def weights_ok(self) -> bool | None:
        """Whether the live weights match the checksum taken at load; None when dropped."""
        actual = await asyncio.to_thread(self.memory.weights_checksum)
        return None if actual is None else actual == self.expected_checksum

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.remove()

    # -- sleep / wake -------------------------------------------------------------------

    @property
    def is_sleeping(self) -> bool:
        return self.sleep_level is not None

    async def sleep(self, level: int, mode: str) -> dict[str, Any]:
        """vLLM's POST /sleep: level 0 pauses, 1 offloads weights, 2 discards them."""
        if level not in (0, 1, 2):
            raise ApiError(400, f"invalid sleep level {level}; expected 0, 1 or 2", param="level")
        if mode not in SLEEP_MODES:
            raise ApiError(400, f"invalid mode {mode!r}; expected abort, wait or keep")
        if not self.config.vllm_api.sleep_modes:
            # Before 0.17 vLLM read no mode, and level 0 was no pause: its allocator
            # offloaded only at level 1, so any other level discarded everything.
            mode, level = "abort", level or 2
        await self._inject("sleep", self.faults.sleep)
        async with self._control:
            if self.sleep_level is not None:
                return {"status": "sleeping", "level": self.sleep_level}
            if self.inflight.count and mode != "wait" and self.faults.crash_on_sleep_with_inflight:
                self._crash("sleep with in-flight requests")
            if mode == "wait":
                await self.inflight.drain()
            self.inflight.pause()
            if mode == "abort":
                self.inflight.abort_all("request aborted: the engine is going to sleep")
            # Level 0 only pauses the scheduler: no memory tag sleeps.
            self.sleep_level, self.sleeping_tags = level, set(TAGS) if level else set()
            self._noop_sleep = self.faults.sleep == "noop"
            if level and not self._noop_sleep:
                await self._memory(lambda: self._free_for_sleep(level))
            self.counters["sleeps"] += 1
        log(f"sleep level={level} mode={mode} gpu_bytes={self.memory.device_bytes}")
        return {"status": "sleeping", "level": level}

    def _free_for_sleep(self, level: int) -> None:
        if level == 1:
            self.memory.offload_weights()
        else:
            self.memory.discard_weights()
        self.memory.free_kv()

    async def wake_up(self, tags: Sequence[str] | None) -> dict[str, Any]:
        """vLLM's POST /wake_up: no tags wakes every sleeping tag; the engine is awake once no
        tag sleeps. As in vLLM, a tag that is not asleep (unknown, or woken already) makes the
        whole call a logged no-op, not an error; `scheduling` names no memory."""
        await self._inject("wake", self.faults.wake)
        limit = self.faults.wake_fail_after
        if limit is not None and self.counters["wakes"] >= limit:
            raise ApiError(500, f"wake_up failed: CUDA error after {limit} wake cycles (injected)")
        async with self._control:
            if self.sleep_level is not None:
                await self._wake_tags(tags)
        status = "sleeping" if self.is_sleeping else "awake"
        return {"status": status, "tags": list(tags) if tags else None}

    async def _wake_tags(self, tags: Sequence[str] | None) -> None:
        wanted = set(TAGS) if not tags else set(tags) - {"scheduling"}
        if tags and wanted - self.sleeping_tags:
            log(f"wake_up tags {sorted(wanted - self.sleeping_tags)} are not asleep: ignored")
            wanted = set()
        for tag in [t for t in TAGS if t in wanted and t in self.sleeping_tags]:
            await self._memory(functools.partial(self._restore, tag))
            self.sleeping_tags.discard(tag)
        # Scheduling resumes once no memory sleeps, whichever call got it there (so any
        # wake_up ends a level-0 pause).
        if not self.sleeping_tags:
            self.sleep_level = None
            self.inflight.resume()
            self.counters["wakes"] += 1
            log(f"awake gpu_bytes={self.memory.device_bytes}")

    def _restore(self, tag: str) -> None:
        if tag == "kv_cache":
            self.memory.allocate_kv(self.config.kv_bytes)
        elif self._noop_sleep:
            return
        elif self.sleep_level == 1:
            self.memory.restore_weights()
            if self.faults.corrupt_on_wake:
                self.memory.corrupt_weights()
        else:
            # Level 2 threw the weights away: the new buffer holds garbage until reload_weights.
            self.memory.allocate_garbage_weights()

    async def _inject(self, step: str, mode: str | None) -> None:
        if step in self.faults.crash:
            self._crash(step)
        if mode == "fail":
            raise ApiError(500, f"{step} failed (injected fault)")
        if mode == "hang":
            await hang()

    # -- collective_rpc and cache calls -------------------------------------------------

    async def collective_rpc(self, method: str, timeout_s: float | None) -> list[Any]:
        """Run `method` on every tensor-parallel rank; one result (None) per rank."""
        if method not in RPC_METHODS:
            raise ApiError(400, f"unknown collective_rpc method {method!r}", param="method")
        if method == "reload_weights":
            try:
                await asyncio.wait_for(self._reload_weights(), timeout_s)
            except TimeoutError:
                raise ApiError(
                    500, f"collective_rpc {method} timed out after {timeout_s}s"
                ) from None
        else:
            self.nccl_suspended = method == "suspend_nccl"
        return [None] * self.config.tensor_parallel_size

    async def _reload_weights(self) -> None:
        async with self._control:
            if self.memory.location not in (WeightsLocation.DEVICE, WeightsLocation.GARBAGE):
                raise ApiError(
                    500, "reload_weights: no weights buffer on the device; wake weights first"
                )
            await self._memory(self._reload_from_disk)
            self.counters["reloads"] += 1
        log(f"reloaded weights from {self.source.path}")

    def _reload_from_disk(self) -> None:
        self.memory.load_weights(self.source)
        if self.faults.corrupt_on_wake:
            self.memory.corrupt_weights()

    async def reset_prefix_cache(self) -> None:
        self.counters["prefix_cache_resets"] += 1

    async def release_kv_cache_memory(self) -> None:
        """Free the KV cache now; a wake or the next request allocates it again."""
        async with self._control:
            await self._memory(self.memory.free_kv)

    # -- inference ----------------------------------------------------------------------

    def admit(self) -> Ticket:
        """Accept an inference request, or refuse it while the engine sleeps."""
        if "request" in self.faults.crash:
            self._crash("request")
        if self.sleep_level is not None and self.sleep_level > 0:
            raise ApiError(503, "engine is sleeping")
        if self.inflight.draining:
            raise ApiError(503, "engine is going to sleep")
        self.usage["requests"] += 1
        return self.inflight.admit()

    async def _start(self, ticket: Ticket) -> None:
        await self.inflight.pass_gate(ticket)
        await ticket.sleep(self.config.response_delay_ms / 1000)
        if self.faults.decode_stall:
            await ticket.stall()
        if not self.memory.kv_bytes and not self.is_sleeping:
            await self._memory(lambda: self.memory.allocate_kv(self.config.kv_bytes))

    async def generate(self, ticket: Ticket, key: bytes, count: int) -> AsyncIterator[str]:
        """Yield `count` words paced at --sim-tokens-per-sec, pausing while scheduling is."""
        await self._start(ticket)
        samples = self.memory.sample_weights(textgen.sample_offsets(key, range(count)))
        words = textgen.tokens(key, samples, count)
        interval = 1 / self.config.tokens_per_sec if self.config.tokens_per_sec else 0.0
        loop = asyncio.get_running_loop()
        due = loop.time()
        for word in words:
            if await self.inflight.pass_gate(ticket):
                due = loop.time()  # resumed after a pause: pace from now, no burst
            due += interval
            await ticket.sleep(due - loop.time())
            self.usage["generation_tokens"] += 1
            yield word

    async def embed(self, ticket: Ticket, key: bytes, dim: int) -> list[float]:
        """A unit vector for `key`, derived from live weight bytes like generated tokens."""
        await self._start(ticket)
        samples = self.memory.sample_weights(textgen.sample_offsets(key, range(4)))
        return textgen.embedding(key, samples, dim)

    # -- introspection ------------------------------------------------------------------

    def sleep_state_label(self) -> str:
        if self.sleep_level is None:
            return "awake"
        return {0: "paused", 1: "weights_offloaded", 2: "discard_all"}[self.sleep_level]

    def snapshot(self) -> dict[str, Any]:
        """The state `/sim/state` reports (weights_ok is added by the caller)."""
        memory = self.memory
        return {
            "pid": os.getpid(),
            "model": self.config.model_name,
            "device": self.config.device,
            "awake": not self.is_sleeping,
            "is_sleeping": self.is_sleeping,
            "sleep_level": self.sleep_level,
            "sleeping_tags": sorted(self.sleeping_tags),
            "weights_location": str(memory.location),
            "weights_bytes": memory.weights_bytes,
            "kv_bytes": memory.kv_bytes,
            "gpu_bytes": memory.device_bytes,
            "host_bytes": memory.host_bytes,
            "expected_checksum": self.expected_checksum,
            "sleep_count": self.counters["sleeps"],
            "wake_count": self.counters["wakes"],
            "reload_count": self.counters["reloads"],
            "prefix_cache_resets": self.counters["prefix_cache_resets"],
            "in_flight": self.inflight.count,
            "waiting": self.inflight.waiting,
            "nccl_suspended": self.nccl_suspended,
            "tensor_parallel_size": self.config.tensor_parallel_size,
            "faults": self.faults.specs(),
        }
