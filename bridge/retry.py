"""Backoff arithmetic: pure functions, no sleeping here."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def backoff_s(
    attempt: int,
    *,
    base_s: float = 0.5,
    cap_s: float = 30.0,
    rng: random.Random | None = None,
    jitter: bool = True,
) -> float:
    """Delay before retry number `attempt` (1-based): exponential, capped, with full jitter.

    This is the package's one backoff. Full jitter (a uniform draw between 0 and
    the exponential bound) spreads the retries of many callers that failed
    together, so they do not return together; without `jitter` the bound itself.
    """
    bound = float(min(cap_s, base_s * 2.0 ** min(max(attempt - 1, 0), 60)))
    return (rng or random).uniform(0.0, bound) if jitter else bound


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` (delta-seconds or HTTP-date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
