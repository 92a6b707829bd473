"""Scopes to sweep now because Absorb's own webhook named them: hints, never events.

A hint is a scope of a feed and when the first notice still unswept named it,
kept in Redis (`keys.hints`) so that the replica that takes the notice and the
replica that sweeps may differ. Notices naming a scope again before it is swept
coalesce into the one hint. A sweep that starts after a hint answers it: the
scheduler clears the hint with the sweep's start time, so a notice that arrives
while a sweep runs is kept for the next one.
"""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis

from bridge import keys

#: At most this many hints wait per feed; a flood of notices beyond it is dropped oldest first.
MAX_PER_FEED = 10_000

_CLEAR = """
local score = redis.call('zscore', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  return redis.call('zrem', KEYS[1], ARGV[1])
end
return 0
"""


class Hints:
    """The hinted scopes of every feed, shared by all replicas through Redis."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._clear = redis.register_script(_CLEAR)

    async def add(self, feed: str, scope: str, *, at: float) -> bool:
        """Hint a scope at Unix time `at`; false when an older hint already waits (coalesced)."""
        key = keys.hints(self.prefix, feed)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {scope: at}, nx=True)
            pipe.zremrangebyrank(key, 0, -MAX_PER_FEED - 1)
            added, _ = await pipe.execute()
        return bool(added)

    async def pending(self, feed: str) -> dict[str, float]:
        """Every hinted scope of a feed and the time of its oldest unanswered notice."""
        raw = await self.redis.zrange(keys.hints(self.prefix, feed), 0, -1, withscores=True)
        pairs = cast(list[tuple[bytes | str, float]], raw)  # withscores: (member, score) pairs
        return {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in pairs}

    async def clear(self, feed: str, scope: str, *, swept_from: float) -> bool:
        """Answer a scope's hint by a sweep that started at Unix time `swept_from`.

        A hint newer than the sweep's start stays: its change may have come after
        the sweep read the scope's page.
        """
        key = keys.hints(self.prefix, feed)
        return bool(await self._clear(keys=[key], args=[scope, repr(swept_from)]))
