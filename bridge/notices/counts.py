"""How many notices were received, refused (by reason), used and unusable: metrics and Redis.

The counts live in one Redis hash (`keys.notice_counts`) so that `status`, a
process of its own, shows every replica's. The listener only notes a count in
memory (it must answer Absorb before doing any work); the resolver's loop writes
what was noted to Redis.
"""

from __future__ import annotations

from collections import Counter

from redis.asyncio import Redis

from bridge import keys, metrics

#: What happened to a notice: `refused:<reason>` for the refused ones.
OUTCOMES = ("received", "used", "unusable", "failed")
REFUSALS = ("signature", "too_large", "not_json", "busy")


class NoticeCounts:
    """Counts of notices by outcome, noted in memory and flushed to Redis."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.key = keys.notice_counts(prefix)
        self._unflushed: Counter[str] = Counter()

    def note(self, outcome: str, reason: str = "") -> None:
        """Count one notice's outcome (a refusal with its reason)."""
        metrics.NOTICES.labels(outcome, reason).inc()
        self._unflushed[f"{outcome}:{reason}" if reason else outcome] += 1

    async def flush(self) -> None:
        """Add what was noted since the last flush to the shared counts."""
        if not self._unflushed:
            return
        noted, self._unflushed = self._unflushed, Counter()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for field, count in noted.items():
                    pipe.hincrby(self.key, field, count)
                await pipe.execute()
        except BaseException:
            self._unflushed.update(noted)  # kept for the next flush
            raise


async def read_counts(redis: Redis, prefix: str) -> dict[str, object]:
    """Every replica's counts: received, used, unusable, failed, and refused by reason."""
    raw = await redis.hgetall(keys.notice_counts(prefix))
    counts = {_text(k): int(v) for k, v in raw.items()}
    refused = {r: counts.get(f"refused:{r}", 0) for r in REFUSALS}
    return {
        **{o: counts.get(o, 0) for o in OUTCOMES},
        "refused": sum(refused.values()),
        "refused_by_reason": refused,
    }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
