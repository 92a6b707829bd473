"""Which scope to sweep next: a pure policy, no I/O, no clock of its own.

Every scope has an interval (a promise: swept at least that often while the budget
allows), the time of its last sweep's start, a change rate learned from what its
sweeps found, and perhaps a hint (Absorb's webhook named it). Given those and the
budget, the policy orders the scopes:

1. scopes never swept, then scopes older than the hard staleness bound, oldest first;
2. hinted scopes, taking at most `Tuning.hint_share` of the sweeps while a stale
   scope waits (all of them when none does);
3. stale scopes (older than their interval), most expected unseen changes first:
   priority = rate x age^alpha.

Scopes within their interval and not hinted are never swept: Absorb's throttle is
shared with the tenant's other integrations. The daemon and `bench.freshness`
drive this same code, one with Redis and a real clock, the other with a model.
"""

from __future__ import annotations

import math
from collections.abc import Container, Hashable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Tuning:
    """The policy's constants; the defaults are the ones `bench.freshness` chose."""

    #: priority = rate x age^alpha among stale scopes.
    alpha: float = 1.5
    #: No scope goes unswept longer than max(interval, this many budget cycles).
    bound_cycles: float = 1.2
    #: The share of sweeps hinted scopes may take while a stale scope waits.
    hint_share: float = 0.5
    #: A new scope is taken to change this often (changes per `prior_s`) until its sweeps tell.
    prior_changes: float = 0.1
    prior_s: float = 300.0
    #: What sweeps found counts half as much after this long.
    half_life_s: float = 3600.0

    def __post_init__(self) -> None:
        if not (self.alpha >= 0 and self.bound_cycles >= 1 and 0 < self.hint_share <= 1):
            raise ValueError(f"{self}: alpha >= 0, bound_cycles >= 1, 0 < hint_share <= 1")
        if not (self.prior_changes > 0 and self.prior_s > 0 and self.half_life_s > 0):
            raise ValueError(f"{self}: the prior and the half-life must be positive")


@dataclass(frozen=True)
class Rate:
    """A scope's learned change rate: changes seen and time watched, both decayed."""

    changes: float = 0.0
    seconds: float = 0.0

    def learn(self, changed: int, elapsed_s: float, tuning: Tuning) -> Rate:
        """This rate after a sweep found `changed` changes in the `elapsed_s` since the last."""
        elapsed_s = max(0.0, elapsed_s)
        keep = 0.5 ** (elapsed_s / tuning.half_life_s)
        return Rate(self.changes * keep + max(0, changed), self.seconds * keep + elapsed_s)

    def per_s(self, tuning: Tuning) -> float:
        """Changes a second, the prior weighing in until enough has been watched."""
        return (self.changes + tuning.prior_changes) / (self.seconds + tuning.prior_s)


@dataclass(frozen=True)
class View:
    """What the policy knows of one scope."""

    key: Hashable
    interval_s: float
    #: When its last sweep started (seconds on the caller's clock), None if never.
    swept_at: float | None
    #: Changes a second (`Rate.per_s`).
    rate: float


def bound_s(interval_s: float, cycle_s: float, tuning: Tuning) -> float:
    """The hard staleness bound: the interval, or more cycles of the budget when it cannot."""
    return max(interval_s, tuning.bound_cycles * cycle_s)


def cycle_s(sweeps: float, requests_per_s: float) -> float:
    """How long the budget takes to sweep every scope once (`sweeps` requests' worth)."""
    return sweeps / requests_per_s if requests_per_s > 0 else math.inf


def rank(views: Iterable[View], now: float, cycle: float, tuning: Tuning) -> Plan:
    """The stale scopes, most pressing first; scopes within their interval are left out."""
    overdue: list[tuple[float, Hashable]] = []
    stale: list[tuple[float, Hashable]] = []
    next_due = math.inf
    for v in views:
        if v.swept_at is None:
            overdue.append((-math.inf, v.key))
            continue
        age = now - v.swept_at
        if age < v.interval_s:
            next_due = min(next_due, v.swept_at + v.interval_s)
            continue
        if age >= bound_s(v.interval_s, cycle, tuning):
            overdue.append((-age, v.key))
        else:
            stale.append((-v.rate * age**tuning.alpha, v.key))
    overdue.sort(key=_first)
    stale.sort(key=_first)
    plan = Plan([k for _, k in overdue] + [k for _, k in stale], len(overdue), tuning)
    plan.next_due = next_due
    return plan


class Plan:
    """One ranking of the stale scopes, taken slot by slot until the next ranking.

    The first `overdue` keys are past the staleness bound (or never swept) and go
    before any hint; hints then take at most `hint_share` of the slots while stale
    scopes wait, and every slot the stale scopes leave.
    """

    def __init__(self, keys: Sequence[Hashable], overdue: int, tuning: Tuning) -> None:
        self.keys = list(keys)
        self.overdue = overdue
        self.tuning = tuning
        #: When the first scope left out (within its interval) comes due.
        self.next_due = math.inf
        self._next = 0
        self._taken: set[Hashable] = set()

    def skip(self, keys: Iterable[Hashable]) -> None:
        """Leave these ranked scopes out (swept since the ranking); a hint still takes them."""
        self._taken.update(keys)

    def waiting(self) -> bool:
        """Whether a ranked scope is still to be taken."""
        while self._next < len(self.keys) and self.keys[self._next] in self._taken:
            self._next += 1
        return self._next < len(self.keys)

    def take(
        self, slots: int, hinted: Sequence[Hashable] = (), *, busy: Container[Hashable] = ()
    ) -> list[Hashable]:
        """Up to `slots` scopes to sweep now; `hinted` oldest first; `busy` ones are left."""
        chosen: list[Hashable] = []
        while len(chosen) < slots and self._next < min(self.overdue, len(self.keys)):
            self._choose(self.keys[self._next], chosen, busy)
            self._next += 1
        hints = [k for k in hinted if k not in busy]
        free = slots - len(chosen)
        share = math.ceil(free * self.tuning.hint_share) if self.waiting() else free
        for key in hints[:share]:
            self._choose(key, chosen, busy, hint=True)
        while len(chosen) < slots and self._next < len(self.keys):
            self._choose(self.keys[self._next], chosen, busy)
            self._next += 1
        for key in hints[share:]:
            if len(chosen) >= slots:
                break
            self._choose(key, chosen, busy, hint=True)
        return chosen

    def _choose(
        self,
        key: Hashable,
        chosen: list[Hashable],
        busy: Container[Hashable],
        *,
        hint: bool = False,
    ) -> None:
        # A hint newer than the scope's sweep from this plan asks for one more sweep.
        if key in busy or key in chosen or (key in self._taken and not hint):
            return
        self._taken.add(key)
        chosen.append(key)


def _first(item: tuple[float, Hashable]) -> float:
    return item[0]
