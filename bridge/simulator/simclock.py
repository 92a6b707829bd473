"""The simulator's own clock: the bridge's clock plus a skew a test can set or move."""

from __future__ import annotations

from datetime import datetime, timedelta

from bridge import clock


class SimClock:
    """Absorb's idea of "now": never behind its own last reading, so stamps only go forward."""

    def __init__(self, skew_s: float = 0.0) -> None:
        self.skew = timedelta(seconds=skew_s)
        self._last: datetime | None = None

    def now(self) -> datetime:
        """The simulated time."""
        value = clock.now() + self.skew
        if self._last is not None and value < self._last:
            value = self._last
        self._last = value
        return value

    def advance(self, seconds: float) -> None:
        """Move the simulated time forward (tests expire tokens this way)."""
        self.skew += timedelta(seconds=seconds)

    def set_skew(self, seconds: float) -> None:
        """Set how far Absorb's clock runs ahead of (or, negative, behind) the bridge's."""
        self.skew = timedelta(seconds=seconds)
