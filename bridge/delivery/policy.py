"""When to try a delivery again, and when to stop hammering a sink. Pure, clock passed in."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from bridge.retry import backoff_s

#: Close to Standard Webhooks' advice: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_SCHEDULE_S: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
#: Delays are spread by up to this share either way, so a sink's failures do not return at once.
JITTER = 0.1
#: A `Retry-After` longer than this is cut to it.
MAX_RETRY_AFTER_S = 6 * 3600.0


def next_delay_s(
    attempts: int,
    schedule: Sequence[float],
    *,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds until try number `attempts + 1`, or None when the schedule is used up.

    `attempts` counts the tries made so far (the first try is the schedule's first
    entry). A `Retry-After` from the sink wins over the schedule when it is longer.
    """
    if attempts >= len(schedule):
        return None
    planned = schedule[attempts] * (1 + (rng or random).uniform(-JITTER, JITTER))
    if retry_after_s is not None:
        planned = max(planned, min(retry_after_s, MAX_RETRY_AFTER_S))
    return max(0.0, planned)


@dataclass
class Circuit:
    """Stops sending to a sink that keeps failing, and lets one probe through after a pause.

    Closed: everything goes. After `threshold` failures in a row it opens for
    `cooldown_s` (doubling on each failed probe, up to `max_cooldown_s`); then one
    probe goes: success closes it, failure opens it again.
    """

    threshold: int = 5
    cooldown_s: float = 15.0
    max_cooldown_s: float = 600.0
    #: A probe that has not concluded after this long (its outcome was lost) is given up.
    probe_timeout_s: float = 60.0
    failures: int = 0
    open_until: float | None = None
    probing: bool = False
    _pause_s: float = field(default=0.0, repr=False)
    #: Probes failed since the circuit last closed: each doubles the pause.
    probes_failed: int = field(default=0, repr=False)
    _probe_at: float = field(default=0.0, repr=False)

    @property
    def is_open(self) -> bool:
        """Whether the circuit is open (or half-open with its probe out)."""
        return self.open_until is not None

    def allows(self, now: float) -> bool:
        """Whether a try may go out now (taking the single probe slot when half-open)."""
        if self.open_until is None:
            return True
        if now < self.open_until:
            return False
        if self.probing and now - self._probe_at < self.probe_timeout_s:
            return False
        self.probing, self._probe_at = True, now
        return True

    def abandon_probe(self) -> None:
        """The probe ended without an outcome (nothing to send, or an error elsewhere)."""
        self.probing = False

    def succeeded(self) -> None:
        """A try went through: close the circuit."""
        self.failures, self.open_until, self.probing, self._pause_s = 0, None, False, 0.0
        self.probes_failed = 0

    def failed(self, now: float) -> None:
        """A try failed: count it, and open (or re-open, longer) when it is one too many."""
        self.failures += 1
        if self.probing:  # the probe failed: pause longer
            self.probes_failed += 1
            self._pause_s = backoff_s(
                self.probes_failed + 1,
                base_s=self.cooldown_s,
                cap_s=self.max_cooldown_s,
                jitter=False,
            )
            self.open_until = now + self._pause_s
            self.probing = False
        elif self.open_until is None and self.failures >= self.threshold:
            # Only the failure that opens the circuit counts: the other tries of the same
            # batch fail for the same reason and must not stretch the pause.
            self._pause_s = self.cooldown_s
            self.open_until = now + self._pause_s
