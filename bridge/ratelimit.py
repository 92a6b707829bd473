"""A token bucket shared by every caller of one client."""

from __future__ import annotations

import asyncio

from bridge import clock


class TokenBucket:
    """Allows `rate_per_s` acquisitions a second on average, `burst` at once.

    Waiters are served in arrival order: the lock is held while a caller sleeps
    for its token, so a steady stream of callers cannot starve an early one.
    """

    def __init__(self, rate_per_s: float, burst: float | None = None) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s)
        self._tokens = self.burst
        self._updated = clock.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = clock.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now

    async def acquire(self) -> None:
        """Wait until a token is available and take it."""
        async with self._lock:
            self._refill()
            if self._tokens < 1.0:
                await asyncio.sleep((1.0 - self._tokens) / self.rate_per_s)
                self._refill()
            self._tokens -= 1.0
