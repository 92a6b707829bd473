"""Freshness under one request budget: the daemon's scheduling policy against a model tenant.

    .venv/bin/python -m bench.freshness            # 5,000 courses, 100 req/s, one simulated hour
    .venv/bin/python -m bench.freshness --json     # one JSON line for bench.run_all

The model: every sweep of a course costs one request and sees every change made
before it. Changes arrive at random (Poisson) on courses drawn from a Zipf(1.0)
activity. The policy is `bridge.schedule.policy`, the code the daemon runs, driven
by a simulated clock in steps of 50 ms; round robin over the same budget is
computed in the same run as the baseline. The second run announces half of the
changes by a hint 1 s after they happen, as Absorb's webhooks would.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
from collections.abc import Hashable
from dataclasses import dataclass, field

from bench.report import Row, emit
from bridge.schedule.policy import Plan, Rate, Tuning, View, cycle_s, rank

#: The simulated clock's step, and how often the policy ranks the scopes again.
STEP_S = 0.05
RANK_EVERY_S = 1.0


@dataclass(frozen=True)
class Tenant:
    """The modelled tenant and its load."""

    courses: int = 5000
    requests_per_s: float = 100.0
    changes_per_s: float = 5.0
    zipf_s: float = 1.0
    hours: float = 1.0
    #: What a user who wants changes within seconds asks for; the budget cannot keep it.
    interval_s: float = 1.0
    #: The share of changes a hint announces, and how long after the change it comes.
    hinted: float = 0.0
    hint_delay_s: float = 1.0
    seed: int = 11


@dataclass
class Outcome:
    """What one run measured."""

    latencies: list[float] = field(default_factory=list)
    #: Requests spent and requests the budget allowed, while some scope was stale.
    spent_stale: int = 0
    allowed_stale: float = 0.0
    spent: int = 0
    allowed: float = 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0

    def used(self) -> float:
        return self.spent / self.allowed if self.allowed else 0.0

    def used_stale(self) -> float:
        return self.spent_stale / self.allowed_stale if self.allowed_stale else 1.0


def changes(t: Tenant) -> list[tuple[float, int, bool]]:
    """(time, course, hinted) of every change, in time order."""
    rng = random.Random(t.seed)
    weights = list(itertools.accumulate(1 / (i + 1) ** t.zipf_s for i in range(t.courses)))
    out, now, end = [], 0.0, t.hours * 3600
    while True:
        now += rng.expovariate(t.changes_per_s)
        if now >= end:
            return out
        course = bisect.bisect_left(weights, rng.random() * weights[-1])
        out.append((now, course, rng.random() < t.hinted))


class Model:
    """The tenant seen by one scheduler: pending changes, sweeps, hints, the clock."""

    def __init__(self, t: Tenant) -> None:
        self.t = t
        self.swept_at: list[float] = [0.0] * t.courses
        self.pending: list[list[float]] = [[] for _ in range(t.courses)]
        self.hints: dict[int, float] = {}
        self.outcome = Outcome()

    def sweep(self, course: int, now: float) -> int:
        seen = self.pending[course]
        self.outcome.latencies += [now - at for at in seen]
        self.pending[course] = []
        self.swept_at[course] = now
        self.hints.pop(course, None)
        self.outcome.spent += 1
        return len(seen)

    def stale(self, now: float) -> bool:
        return min(self.swept_at) < now - self.t.interval_s

    def run(self, choose: Chooser) -> Outcome:
        t, log = self.t, changes(self.t)
        notices = sorted((at + t.hint_delay_s, c) for at, c, hinted in log if hinted)
        end, step, credit = t.hours * 3600, 0, 0.0
        i = j = 0
        stale = False
        while (now := step * STEP_S) < end:
            while i < len(log) and log[i][0] <= now:
                self.pending[log[i][1]].append(log[i][0])
                i += 1
            while j < len(notices) and notices[j][0] <= now:
                self.hints.setdefault(notices[j][1], notices[j][0])
                j += 1
            if step % round(RANK_EVERY_S / STEP_S) == 0:
                stale = self.stale(now)
            credit += t.requests_per_s * STEP_S
            self.outcome.allowed += t.requests_per_s * STEP_S
            slots = int(credit)
            spent = len(choose.choose(self, now, slots))
            credit -= spent
            credit = min(credit, t.requests_per_s * STEP_S)  # an idle budget is lost
            if stale:
                self.outcome.spent_stale += spent
                self.outcome.allowed_stale += t.requests_per_s * STEP_S
            step += 1
        for seen in self.pending:  # never swept: counted up to the end
            self.outcome.latencies += [end - at for at in seen]
        return self.outcome


class Chooser:
    def choose(self, model: Model, now: float, slots: int) -> list[int]:
        raise NotImplementedError


class RoundRobin(Chooser):
    """Every course in turn at the full budget, whatever its interval."""

    def __init__(self) -> None:
        self.next = 0

    def choose(self, model: Model, now: float, slots: int) -> list[int]:
        chosen = [(self.next + k) % model.t.courses for k in range(slots)]
        self.next = (self.next + slots) % model.t.courses
        for course in chosen:
            model.sweep(course, now)
        return chosen


class Policy(Chooser):
    """The daemon's policy: learned rates, ranking each second, hints between rankings."""

    def __init__(self, t: Tenant, tuning: Tuning) -> None:
        self.tuning = tuning
        self.rates = [Rate()] * t.courses
        self.cycle = cycle_s(t.courses, t.requests_per_s)
        self.plan: Plan | None = None
        self.ranked_at = -1.0

    def choose(self, model: Model, now: float, slots: int) -> list[int]:
        if self.plan is None or now - self.ranked_at >= RANK_EVERY_S or not self.plan.waiting():
            self.plan = rank(self.views(model), now, self.cycle, self.tuning)
            self.ranked_at = now
        hinted: list[Hashable] = sorted(model.hints, key=model.hints.__getitem__)
        chosen = [int(str(k)) for k in self.plan.take(slots, hinted)]
        for course in chosen:
            elapsed = now - model.swept_at[course]
            found = model.sweep(course, now)
            self.rates[course] = self.rates[course].learn(found, elapsed, self.tuning)
        return chosen

    def views(self, model: Model) -> list[View]:
        t, interval = self.tuning, model.t.interval_s
        return [
            View(c, interval, model.swept_at[c], self.rates[c].per_s(t))
            for c in range(model.t.courses)
        ]


def measure(t: Tenant, tuning: Tuning) -> tuple[Outcome, Outcome]:
    """The policy's and round robin's outcomes on the same tenant and changes."""
    return Model(t).run(Policy(t, tuning)), Model(t).run(RoundRobin())


def rows(t: Tenant, tuning: Tuning, label: str) -> list[Row]:
    ours, rr = measure(t, tuning)
    floor = "round robin"
    out = []
    for p in (50, 90, 99):
        value, base = ours.percentile(p), rr.percentile(p)
        row = Row(f"freshness{label}: change to sweep p{p}", value, "s", base, floor)
        if p == 50:
            limit = 1.5 if t.hinted else 5.0
            row.target, row.met = f"<= {limit:g} s", value <= limit
        if p == 99 and not t.hinted:
            row.target, row.met = "<= 1.2 x round robin", value <= 1.2 * base
        out.append(row)
    out.append(
        Row(f"freshness{label}: budget used", 100 * ours.used(), "%", 100 * rr.used(), floor)
    )
    used = Row(
        f"freshness{label}: budget used while a scope is stale",
        100 * ours.used_stale(),
        "%",
        100 * rr.used_stale(),
        floor,
    )
    if not t.hinted:
        used.target, used.met = ">= 95 %", ours.used_stale() >= 0.95
    out.append(used)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--courses", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=100.0, help="requests a second")
    parser.add_argument("--changes", type=float, default=5.0, help="changes a second")
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--interval", type=float, default=1.0, help="every scope's interval, s")
    parser.add_argument("--alpha", type=float, default=Tuning.alpha)
    parser.add_argument("--bound-cycles", type=float, default=Tuning.bound_cycles)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tenant = Tenant(
        courses=args.courses,
        requests_per_s=args.rate,
        changes_per_s=args.changes,
        hours=args.hours,
        interval_s=args.interval,
    )
    tuning = Tuning(alpha=args.alpha, bound_cycles=args.bound_cycles)
    hinted = Tenant(**{**tenant.__dict__, "hinted": 0.5})
    emit(rows(tenant, tuning, "") + rows(hinted, tuning, " (half hinted)"), as_json=args.json)


if __name__ == "__main__":
    main()
