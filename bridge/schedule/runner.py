"""The daemon's scheduler: the policy over Redis, a real clock and a few sweep slots.

Each step ranks the scopes (`policy.rank`) from their schedule state in Redis
(`state`) when the last ranking is a second old, or used up and a scope has come
due since; it gives free slots (`Timing.concurrency`) to the hinted and stale
scopes the plan names, each sweep on its own task. Hints are read every step,
so a hinted scope waits at most a step (`Timing.idle_s`) for a free slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from functools import partial

import structlog

from bridge import clock, metrics
from bridge.absorb.timefmt import parse_datetime
from bridge.feeds import Scope
from bridge.hints import Hints
from bridge.retry import backoff_s
from bridge.schedule import state
from bridge.schedule.policy import Plan, Tuning, View, cycle_s, rank
from bridge.store import Store

#: How often the scopes are ranked again, at most (a scope is swept at most once a ranking,
#: unless hinted); a few scopes are ranked more often, down to every step (`idle_s`).
RANK_EVERY_S = 1.0
#: Scopes ranked a second: reading their state from Redis costs about this much.
_RANKED_PER_S = 5000

log = structlog.get_logger(__name__)

Key = tuple[str, str]
#: Sweeps one scope: (scope, full reconciliation?, even if just swept?) -> whether it completed.
SweepFn = Callable[[Scope, bool, bool], Awaitable[bool]]


class Scheduler:
    """Picks the scopes to sweep and runs their sweeps, at most `concurrency` at once."""

    def __init__(
        self,
        store: Store,
        scopes: Callable[[], Sequence[Scope]],
        sweep: SweepFn,
        *,
        concurrency: int,
        idle_s: float,
        requests_per_s: float,
        tuning: Tuning | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.store = store
        self.hints = Hints(store.redis, store.prefix)
        self.scopes = scopes
        self.sweep = sweep
        self.concurrency = concurrency
        self.idle_s = idle_s
        self.requests_per_s = requests_per_s
        self.tuning = tuning or Tuning()
        #: Once set, no sweep starts (the daemon is stopping).
        self.stop = stop or asyncio.Event()
        #: Sweeps under way, and when each started (monotonic).
        self.running: dict[Key, asyncio.Task[bool]] = {}
        self.started: dict[Key, float] = {}
        #: Scopes whose last sweep did not complete: failures in a row, and when to try again.
        self.resting: dict[Key, tuple[int, float]] = {}
        self._plan: Plan | None = None
        self._ranked_at = -RANK_EVERY_S
        self._known: dict[Key, tuple[Scope, bool]] = {}
        #: Scopes whose sweep ended since the plan was ranked: the plan knows them as they were
        #: (a hint still sweeps them again).
        self._ended: set[Key] = set()

    async def step(self) -> int:
        """Start sweeps in the free slots; how many started (0: nothing to do, rest a while)."""
        now = clock.monotonic()
        plan = self._plan
        if (
            plan is None
            or now - self._ranked_at >= self._rank_every_s()
            or (not plan.waiting() and clock.now().timestamp() >= plan.next_due)
        ):
            self._ended = set()  # before reading: a sweep ending meanwhile is noted again
            self._plan = plan = await self.rank()
            self._ranked_at = now
        hinted = await self.hinted()
        free = self.concurrency - len(self.running)
        plan.skip(self._ended)
        busy = set(self.running) | {k for k, (_, at) in self.resting.items() if at > now}
        chosen = plan.take(free, hinted, busy=busy) if free > 0 and not self.stop.is_set() else []
        hinted_set = set(hinted)
        for key in chosen:
            scope, full = self._known[key]  # type: ignore[index]
            self.start(scope, full, hinted=key in hinted_set)
        if chosen:
            return len(chosen)
        if free > 0 or not self.running:
            # Nothing to start: sleep until the next scope comes due when that is sooner
            # than a rest, so intervals are kept to within a step.
            wake = plan.next_due - clock.now().timestamp()
            if 0 < wake < self.idle_s:
                await asyncio.sleep(wake)
                return 1
            return 0
        # Every slot is taken: wait for one, and go again at once if work waits for it.
        await asyncio.wait(
            list(self.running.values()), timeout=self.idle_s, return_when=asyncio.FIRST_COMPLETED
        )
        return int(bool(plan.waiting() or hinted))

    def _rank_every_s(self) -> float:
        return min(RANK_EVERY_S, max(self.idle_s, len(self._known) / _RANKED_PER_S))

    def start(self, scope: Scope, full: bool, *, hinted: bool = False) -> None:
        key = (scope.feed.name, scope.key)
        task = asyncio.create_task(self.guarded(scope, full, hinted))
        task.add_done_callback(partial(self._done, key))
        self.running[key] = task
        self.started[key] = clock.monotonic()

    def _done(self, key: Key, task: asyncio.Task[bool]) -> None:
        self._ended.add(key)
        self.running.pop(key, None)
        self.started.pop(key, None)
        # The sweep itself runs under the loop helper; this sees what escapes its bookkeeping.
        if not task.cancelled() and (error := task.exception()) is not None:
            metrics.LOOP_ERRORS.labels("sweep").inc()
            log.error("schedule.sweep_task_failed", feed=key[0], scope=key[1], error=repr(error))

    async def guarded(self, scope: Scope, full: bool, hinted: bool = False) -> bool:
        """Sweep; a scope whose sweep did not complete rests a while (backing off)."""
        key = (scope.feed.name, scope.key)
        if await self.sweep(scope, full, hinted):
            self.resting.pop(key, None)
            return True
        failures = self.resting.get(key, (0, 0.0))[0] + 1
        pause = backoff_s(failures, base_s=self.idle_s, cap_s=30.0, jitter=False)
        self.resting[key] = (failures, clock.monotonic() + pause)
        return False

    async def rank(self, *, force: bool = False) -> Plan:
        """Rank every scope from its state in Redis (all of them with `force`)."""
        scopes = list(self.scopes())
        kept = await state.read(self.store, [(s.feed, s.key) for s in scopes])
        now = clock.now().timestamp()
        self._known = {
            (s.feed.name, s.key): (s, _full(s, k, now)) for s, k in zip(scopes, kept, strict=True)
        }
        views = [
            View(key, 0.0 if force else k.interval_s, k.swept_at, k.rate.per_s(self.tuning))
            for key, k in zip(self._known, kept, strict=True)
        ]
        cycle = cycle_s(sum(k.cost for k in kept), self.requests_per_s)
        return rank(views, now, cycle, self.tuning)

    async def hinted(self) -> list[Hashable]:
        """The hinted scopes this replica knows, oldest hint first."""
        out: list[tuple[float, Key]] = []
        for feed in {k[0] for k in self._known}:
            for scope, at in (await self.hints.pending(feed)).items():
                if (feed, scope) in self._known:
                    out.append((at, (feed, scope)))
        return [k for _, k in sorted(out)]

    async def due(self, *, force: bool) -> list[tuple[Scope, bool]]:
        """Every scope a sweep-everything-due pass should sweep now, with its `full`."""
        plan = await self.rank(force=force)
        hinted = await self.hinted()
        keys = plan.take(len(plan.keys) + len(hinted), hinted)
        return [self._known[k] for k in keys]  # type: ignore[index]

    async def swept(self, scope: Scope, *, started: float, changed: int, cost: int) -> None:
        """Record a completed sweep that began at Unix time `started`, and answer its hint."""
        feed, key = scope.feed, scope.key
        (kept,) = await state.read(self.store, [(feed, key)])
        fields = state.after_sweep(
            scope, kept, started=started, changed=changed, cost=cost, tuning=self.tuning
        )
        await self.store.set_scope_state(feed.name, key, fields)
        await self.hints.clear(feed.name, key, swept_from=started)

    async def swept_since(self, scope: Scope) -> bool:
        """Whether the scope was swept within its interval (by another replica, since ranked)."""
        (kept,) = await state.read(self.store, [(scope.feed, scope.key)])
        if kept.swept_at is None:
            return False
        return clock.now().timestamp() - kept.swept_at < kept.interval_s


def _full(scope: Scope, kept: state.Kept, now: float) -> bool:
    """Whether the scope's next sweep is a full reconciliation."""
    reconciled = kept.raw.get("reconciled_at") or kept.raw.get("created_at")
    try:
        at = parse_datetime(reconciled).timestamp() if reconciled else None
    except ValueError:  # not a time: reconcile, which writes a good one
        return True
    return at is not None and now - at >= scope.feed.reconcile_every_s
