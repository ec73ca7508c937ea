"""A key's requests-per-minute window in Redis, shared by every web process of a cluster.

One sorted set per key holds the admission times of its last minute. A Lua script trims,
counts and adds in one step, so two web processes cannot both take the last slot, and it
reads the time from Redis itself, so web hosts with skewed clocks agree on the window.

When Redis cannot answer, the request is admitted and a warning logged (at most once a
minute): the limit protects capacity, not identity (the key was already checked), and an
outage of the limiter should not become an outage of the gateway.
"""

from __future__ import annotations

import logging
import secrets
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from llmux_site.gateway.keys import WINDOW
from llmux_site.logs import Throttle

log = logging.getLogger("llmux.gateway")

# KEYS[1]: the key's set. ARGV: rpm, window in ms, a member unique to this request.
# Returns -1 when admitted, else the milliseconds until the oldest admission leaves.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return -1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tonumber(oldest[2]) + window - now
"""

WARN_EVERY = 60.0  # seconds between warnings that Redis is not answering
TIMEOUT = 0.5  # seconds a request waits on Redis before it is admitted unlimited


class RedisWindow:
    """`RateWindow` over Redis: `namespace` keeps clusters sharing one Redis apart."""

    def __init__(self, url: str, namespace: str, window: float = WINDOW) -> None:
        self._redis = aioredis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
        self._script = self._redis.register_script(_ADMIT)
        self._namespace = namespace
        self._window_ms = int(window * 1000)
        self._warnings = Throttle(WARN_EVERY)

    async def admit(self, key_id: int, rpm: int) -> float | None:
        member = f"{time.time_ns()}-{secrets.token_hex(4)}"
        try:
            wait_ms = await self._script(
                keys=[f"{self._namespace}:rpm:{key_id}"], args=[rpm, self._window_ms, member]
            )
        except (RedisError, OSError) as exc:
            if self._warnings.ready():
                log.warning("gateway: rate limits not enforced, Redis did not answer: %s", exc)
            return None
        return None if int(wait_ms) < 0 else int(wait_ms) / 1000

    async def close(self) -> None:
        await self._redis.aclose()
