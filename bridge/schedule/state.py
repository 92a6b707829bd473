"""What the scheduler keeps per scope in Redis, shared by every replica.

In the scope's state hash (`keys.scope_state`), beside the sweeper's fields:
`sweep_started` (Unix seconds: when its last completed sweep began, which is how
old what the bridge knows of it is), `rate_changes` and `rate_seconds` (its learned
change rate, `policy.Rate`), `cost` (requests its last sweep took) and, for feeds
that opt into `max_interval`, `quiet_sweeps` and `interval_s` (how far a quiet scope
has backed off).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge import keys
from bridge.absorb.timefmt import format_rfc3339
from bridge.feeds import FeedSpec, Scope
from bridge.retry import backoff_s
from bridge.schedule.policy import Rate, Tuning
from bridge.store import Store


@dataclass(frozen=True)
class Kept:
    """One scope's schedule state, read back."""

    swept_at: float | None
    rate: Rate
    cost: float
    interval_s: float
    raw: dict[str, str]


def parse(feed: FeedSpec, raw: dict[str, str]) -> Kept:
    """A scope's schedule state from its hash; anything unreadable counts as unknown."""
    return Kept(
        swept_at=_number(raw.get("sweep_started")),
        rate=Rate(_number(raw.get("rate_changes")) or 0.0, _number(raw.get("rate_seconds")) or 0.0),
        cost=max(1.0, _number(raw.get("cost")) or 1.0),
        interval_s=max(feed.interval_s, _number(raw.get("interval_s")) or 0.0)
        if feed.max_interval_s is not None
        else feed.interval_s,
        raw=raw,
    )


async def read(store: Store, scopes: Sequence[tuple[FeedSpec, str]]) -> list[Kept]:
    """The schedule state of many scopes (feed, scope key) in one round trip."""
    async with store.redis.pipeline(transaction=False) as pipe:
        for feed, key in scopes:
            pipe.hgetall(keys.scope_state(store.prefix, feed.name, key))
        raws = await pipe.execute()
    return [
        parse(feed, {_text(k): _text(v) for k, v in raw.items()})
        for (feed, _), raw in zip(scopes, raws, strict=True)
    ]


def after_sweep(
    scope: Scope, kept: Kept, *, started: float, changed: int, cost: int, tuning: Tuning
) -> dict[str, str]:
    """The fields to write once a sweep that began at `started` found `changed` changes."""
    elapsed = started - kept.swept_at if kept.swept_at is not None else 0.0
    # A first sweep's records are the baseline, not changes to learn a rate from.
    rate = kept.rate.learn(changed if kept.swept_at is not None else 0, elapsed, tuning)
    fields = {
        "sweep_started": f"{started:.3f}",
        "rate_changes": f"{rate.changes:.6g}",
        "rate_seconds": f"{rate.seconds:.6g}",
        "cost": str(max(1, cost)),
        "last_error": "",
    }
    if "created_at" not in kept.raw:
        fields["created_at"] = format_rfc3339(datetime.fromtimestamp(started, UTC))
    feed = scope.feed
    if feed.max_interval_s is not None:  # opt-in: quiet scopes back off, a change resets
        quiet = int(_number(kept.raw.get("quiet_sweeps")) or 0) + 1 if changed == 0 else 0
        interval = backoff_s(
            quiet + 1, base_s=feed.interval_s, cap_s=feed.max_interval_s, jitter=False
        )
        fields |= {"quiet_sweeps": str(quiet), "interval_s": f"{interval:g}"}
    return fields


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
