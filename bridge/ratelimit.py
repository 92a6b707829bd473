"""The one rate limiter of the package: GCRA, in this process or shared through Redis.

GCRA (the generic cell rate algorithm) keeps one number, the theoretical arrival
time (TAT) of the next request: each request moves it on by 1/rate, and a request
may go once the TAT is no more than `burst` requests ahead of now. The same
arithmetic serves the Absorb client (one budget per tenant, every replica's
requests through one Lua script in Redis), sink pacing (in this process) and the
simulator's throttle (answers now, 429 or not).
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge import clock

log = structlog.get_logger(__name__)


class Limiter(Protocol):
    """Anything that makes a request wait its turn."""

    async def acquire(self) -> None: ...


def gcra(tat: float, now: float, rate_per_s: float, burst: float) -> tuple[float, float]:
    """The TAT after one more request, and how long that request must wait (0: go now)."""
    step = 1.0 / rate_per_s
    later = max(tat, now) + step
    return later, max(0.0, later - burst * step - now)


class RateLimiter:
    """`rate_per_s` requests a second on average, `burst` at once, in this process.

    `acquire` reserves the next free moment and sleeps until then, so callers are
    served in arrival order; `allow` answers at once and takes the request only if
    it may go now.
    """

    def __init__(self, rate_per_s: float, burst: float | None = None) -> None:
        if not (rate_per_s > 0 and math.isfinite(rate_per_s)):
            raise ValueError("rate_per_s must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s)
        self._tat = -math.inf

    def reserve(self) -> float:
        """Take the next free moment; how long to wait for it."""
        self._tat, wait = gcra(self._tat, clock.monotonic(), self.rate_per_s, self.burst)
        return wait

    def allow(self) -> bool:
        """Take a request if it may go now; never waits."""
        tat, wait = gcra(self._tat, clock.monotonic(), self.rate_per_s, self.burst)
        if wait > 0:
            return False
        self._tat = tat
        return True

    async def acquire(self) -> None:
        """Wait until a request may go, and take it."""
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)


# GCRA on Redis's own clock (microseconds), so replicas on hosts whose clocks differ
# share one budget. ARGV: microseconds per request, burst in requests.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local step = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local later = tat + step
local wait = later - tonumber(ARGV[2]) * step - now
if wait < 0 then wait = 0 end
local ttl = math.ceil((later - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', later), 'PX', ttl)
return string.format('%.0f', wait)
"""


class SharedRateLimiter:
    """One budget for every replica: GCRA in one Lua script in Redis, under `key`.

    When Redis cannot be reached the request waits on a limiter of this process at
    the same rate instead (so N replicas cut off from Redis may together send up
    to N times the budget until it answers again); that is logged once per outage.
    """

    def __init__(self, redis: Redis, key: str, rate_per_s: float, burst: float | None = None):
        self.local = RateLimiter(rate_per_s, burst)
        self.key = key
        self._script = redis.register_script(_GCRA)
        self._args = [f"{1e6 / rate_per_s:.0f}", f"{self.local.burst:g}"]
        self._cut_off = False

    async def acquire(self) -> None:
        """Wait until the shared budget lets a request go, and take it."""
        try:
            wait_us = float(await self._script(keys=[self.key], args=self._args))
        except RedisError as e:
            if not self._cut_off:
                log.warning("ratelimit.local", reason=f"Redis unreachable: {e}", key=self.key)
            self._cut_off = True
            await self.local.acquire()
            return
        self._cut_off = False
        if wait_us > 0:
            await asyncio.sleep(wait_us / 1e6)
