"""The one clock: every read of "now" in the bridge goes through here so tests can move time."""

from __future__ import annotations

import time
from datetime import UTC, datetime

_offset_s = 0.0


def now() -> datetime:
    """Current time, timezone-aware UTC, shifted by any offset a test has set."""
    return (
        datetime.now(UTC)
        if _offset_s == 0.0
        else datetime.fromtimestamp(time.time() + _offset_s, UTC)
    )


def monotonic() -> float:
    """Seconds on a monotonic clock, for durations, rate limits and deadlines."""
    return time.monotonic()


def set_offset(seconds: float) -> None:
    """Shift `now()` by `seconds` (tests simulate clock skew with it)."""
    global _offset_s
    _offset_s = seconds
