"""The daemon: one object that sweeps every feed's scopes and delivers the outbox to every sink.

Its loops are steppable: `sweep_once()` sweeps every scope that is due and whose
lease this replica can take, `deliver_once()` moves the outbox to the sinks. The
daemon repeats their steps, each loop under `bridge.supervise` so that no exception
ends it; tests call the steps directly. What the loops do lives with its stage:
`schedule.runner` picks the scopes, `schedule.leased` sweeps one under its lease,
`delivery.lanes` opens each sink and runs its delivery loops, `upkeep` watches Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
from redis.exceptions import RedisError

from bridge import clock, logs, metrics, replicas
from bridge.absorb.client import AbsorbClient
from bridge.delivery import SinkWorker
from bridge.delivery.lanes import DeliveryLanes
from bridge.delivery.policy import DEFAULT_SCHEDULE_S
from bridge.errors import BridgeError
from bridge.feeds import FeedSpec, Scope, course_scope, discover_scopes, scopes_of_user
from bridge.hints import Hints
from bridge.notices import NoticeListener
from bridge.notices.resolve import NoticeResolver
from bridge.personal_data import PersonalData
from bridge.routes import Route
from bridge.schedule.leased import LeasedSweeps
from bridge.schedule.runner import Scheduler
from bridge.sinks.base import Sink
from bridge.store import Store
from bridge.supervise import Bounds, Supervisor
from bridge.sweep import Sweeper, SweepResult
from bridge.upkeep import Upkeep

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Timing:
    """How the daemon paces itself, and how long its loops may go quiet before health says so."""

    #: A replica that dies mid-sweep holds its scopes at most this long.
    lease_ttl_s: float = 30.0
    #: How often the list of courses of an every-course feed is asked again.
    discovery_interval_s: float = 600.0
    #: Scopes swept at once by one replica (they share the Absorb request budget).
    concurrency: int = 4
    #: How long the scheduler rests when nothing was due (a hint waits at most this long).
    idle_s: float = 0.25
    #: The Absorb tenant's request budget (every replica's together): how long a round takes.
    requests_per_s: float = 20.0
    #: Grace period on stop before in-flight work is cancelled.
    grace_s: float = 10.0
    #: How often outbox entries every sink has acknowledged are dropped.
    trim_interval_s: float = 60.0
    #: How often Redis is checked (reachable, data still there) and the gauges that need it set.
    stats_interval_s: float = 5.0
    #: A loop without a completed cycle for this long (or 5 of its periods) is stalled: not ready.
    stall_floor_s: float = 60.0
    #: A loop without a completed cycle for this long (or 20 of its periods) is wedged: not alive.
    wedge_floor_s: float = 600.0
    #: One scope's sweep running longer than this makes the bridge not ready.
    sweep_stall_s: float = 1800.0


@dataclass(frozen=True)
class DeliveryOptions:
    """How one sink is delivered to."""

    schedule_s: tuple[float, ...] = DEFAULT_SCHEDULE_S
    max_in_flight: int = 8
    rate_limit_per_s: float | None = None
    max_dead_letters: int | None = None
    personal_data: PersonalData | None = None


@dataclass
class _Feed:
    spec: FeedSpec
    scopes: list[Scope] = field(default_factory=list)
    discovered_at: float | None = None


class Bridge:
    """Sweeps, detects and delivers until stopped.

    With `check_redis_settings` (the default) it warns once when Redis's settings can
    lose its data.
    """

    def __init__(
        self,
        *,
        client: AbsorbClient,
        store: Store,
        feeds: Sequence[FeedSpec],
        sinks: Sequence[Sink],
        routes: Sequence[Route],
        source: str,
        page_size: int | None = None,
        timing: Timing | None = None,
        delivery: Mapping[str, DeliveryOptions] | None = None,
        check_redis_settings: bool = True,
        notices: NoticeListener | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.timing = timing or Timing()
        self.sweeper = Sweeper(client, store, source=source, page_size=page_size)
        self.feeds = [_Feed(spec) for spec in feeds]
        options = delivery or {}
        self.workers = [
            _worker(store, sink, routes, options.get(sink.name, DeliveryOptions()))
            for sink in sinks
        ]
        self._stop = asyncio.Event()
        t = self.timing
        self.loops = Supervisor(
            self._stop, Bounds(stall_floor_s=t.stall_floor_s, wedge_floor_s=t.wedge_floor_s)
        )
        self._sweeping: list[asyncio.Task[None]] = []
        self.scheduler = Scheduler(
            store,
            self._scopes,
            self._sweep_attempt,
            concurrency=self.timing.concurrency,
            idle_s=self.timing.idle_s,
            requests_per_s=self.timing.requests_per_s,
            stop=self._stop,
        )
        self._upkeep: list[asyncio.Task[None]] = []
        self._stopped = False
        #: Per dependency: "ok" or what is wrong with it ("starting" until first checked).
        self.health: dict[str, str] = {"redis": "starting", "absorb": "starting"}
        #: How this process names itself in the loop health `status` reads.
        self.replica_id = replicas.replica_id()
        self.upkeep = Upkeep(
            store,
            self.workers,
            lambda: [(f.spec, f.scopes) for f in self.feeds],
            self.health,
            requests_per_s=self.timing.requests_per_s,
            check_settings=check_redis_settings,
        )
        self.leased = LeasedSweeps(
            store=store,
            sweeper=self.sweeper,
            scheduler=self.scheduler,
            loops=self.loops,
            health=self.health,
            lease_ttl_s=self.timing.lease_ttl_s,
            data_losses=lambda: self.upkeep.data_losses,
        )
        self.lanes = DeliveryLanes(self.workers, self.loops, self._stop, self.check_redis_data)
        self.notices = (
            None
            if notices is None
            else NoticeResolver(
                notices.queue,
                client=client,
                hints=Hints(store.redis, store.prefix),
                targets=self,
                counts=notices.counts,
            )
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every loop: scheduler, discovery, each sink's opening, stats and trimming.

        Nothing here needs Redis, Absorb or a sink to be up: every loop retries
        with backoff and the bridge reports itself not ready meanwhile.
        """
        t, spawn = self.timing, self.loops.spawn
        self._sweeping = [spawn("schedule", self.scheduler.step, idle_s=t.idle_s)]
        for feed in self.feeds:
            name = feed.spec.name
            self._sweeping.append(
                spawn(
                    f"discovery:{name}",
                    partial(self._discover_step, feed),
                    idle_s=t.discovery_interval_s,
                    feed=name,
                )
            )
        self.lanes.start()
        self._upkeep = [
            spawn("stats", self._stats_step, idle_s=t.stats_interval_s),
            spawn("trim", self._trim_step, idle_s=t.trim_interval_s, rest_first=True),
        ]
        if self.notices is not None:
            self._sweeping.append(spawn("notices", self.notices.resolve_once, idle_s=0.0))

    def scopes_for_user(self, user_id: str) -> list[tuple[str, str]]:
        """Every (feed, scope key) listing the user's enrollments (user_enrollments feeds)."""
        return [(f.spec.name, s.key) for f in self.feeds for s in scopes_of_user(f.scopes, user_id)]

    def sweeps_by_course(self) -> bool:
        """Whether some feed sweeps per course, lesson or session (all but user_enrollments)."""
        return any(f.spec.resource != "user_enrollments" for f in self.feeds)

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Whether the bridge can do its work, and what is wrong when it cannot.

        Redis and Absorb must answer, no loop may be stalled (`Timing.stall_floor_s`)
        and no scope's sweep may have run longer than `Timing.sweep_stall_s`.
        """
        checks = dict(self.health)
        stalled = self.loops.stalled()
        checks["loops"] = "ok" if not stalled else f"stalled: {', '.join(sorted(stalled))}"
        checks.update({f"loop:{name}": why for name, why in stalled.items()})
        now = clock.monotonic()
        slow = sorted(
            (now - at, f"{feed}/{scope}")
            for (feed, scope), at in self.scheduler.started.items()
            if now - at > self.timing.sweep_stall_s
        )
        if slow:
            took, scope = slow[-1]
            checks["sweeps"] = f"{len(slow)} running too long, {scope} for {took:.0f}s"
        return all(v == "ok" for v in checks.values()), checks

    def liveness(self) -> tuple[bool, dict[str, str]]:
        """Whether the process should go on: not once a loop has died or is wedged."""
        dead = self.loops.dead()
        checks = {"loops": "ok" if not dead else f"dead: {', '.join(sorted(dead))}"}
        checks.update({f"loop:{name}": why for name, why in dead.items()})
        return not dead, checks

    async def stop(self) -> None:
        """Stop sweeping, let delivery drain the outbox, all within the grace period; idempotent.

        What is still undelivered when the grace period ends stays in the outbox and
        goes out after the next start.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        running = asyncio.get_running_loop()
        deadline = running.time() + self.timing.grace_s
        await _finish([*self._sweeping, *self.scheduler.running.values()], self.timing.grace_s)
        lanes = [*self.lanes.opening, *self.lanes.delivering]
        await _finish(lanes, max(0.0, deadline - running.time()))
        # Sweeping has stopped: deliver what the last sweeps wrote, until caught up or
        # the grace period ends.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.lanes.drain(), max(0.0, deadline - running.time()))
        await _finish(self._upkeep, 1.0)  # a stats step under way ends, not cut mid-command
        with contextlib.suppress(RedisError):  # it expires by itself anyway
            await replicas.withdraw(self.store.redis, self.store.prefix, self.replica_id)
        await self.lanes.close()

    # -- sweeping --------------------------------------------------------------------------

    def _scopes(self) -> list[Scope]:
        return [scope for feed in self.feeds for scope in feed.scopes]

    def scopes_for_course(self, course_id: str) -> list[tuple[str, str]]:
        """(feed, scope key) of every scope that lists enrollments of a course.

        GUIDs compare in any case. An every-course feed has the course's scope
        even before discovery finds the course (its key is `feeds.course_scope`'s);
        a hint for it is taken once discovery has.
        """
        wanted = course_id.lower()
        found: list[tuple[str, str]] = []
        for feed in self.feeds:
            spec = feed.spec
            known = [
                (spec.name, s.key) for s in feed.scopes if (s.course_id or "").lower() == wanted
            ]
            if not known and spec.resource == "course_enrollments" and spec.course_ids is None:
                known = [(spec.name, course_scope(spec, wanted).key)]
            found += known
        return found

    async def sweep_once(self, *, force: bool = False) -> int:
        """Sweep every scope that is due (all of them with `force`); returns how many were swept.

        A scope whose sweep fails, whatever the error, is logged and counted; the
        others go on.
        """
        for feed in self.feeds:
            await self._discover(feed)
        due = await self.scheduler.due(force=force)
        gate = asyncio.Semaphore(self.timing.concurrency)

        async def one(scope: Scope, full: bool) -> bool:
            async with gate:
                if self._stop.is_set():
                    return False
                return await self.scheduler.guarded(scope, full, force)

        done = await asyncio.gather(*(one(s, full) for s, full in due))
        return sum(done)

    async def _sweep_attempt(self, scope: Scope, full: bool, anyway: bool) -> bool:
        """Sweep one scope; any error is the scope's failure, logged and counted, never more."""
        step = partial(self._sweep_recorded, scope, full, anyway)
        result = await self.loops.attempt("sweep", step, feed=scope.feed.name, scope=scope.key)
        return result is not None

    async def _sweep_recorded(self, scope: Scope, full: bool, anyway: bool) -> SweepResult | None:
        try:
            return await self.sweep_scope(scope, full=full, anyway=anyway)
        except Exception as e:
            # What sweep_scope does not expect still shows as the scope's failure.
            metrics.SWEEPS.labels(scope.feed.name, "failed").inc()
            text = f"{type(e).__name__}: {e}"[:500]
            with contextlib.suppress(RedisError):
                await self.store.set_scope_state(scope.feed.name, scope.key, {"last_error": text})
            raise

    async def sweep_scope(
        self, scope: Scope, *, full: bool = False, anyway: bool = True
    ) -> SweepResult | None:
        """Sweep one scope under its lease; None when another replica holds it.

        Unless `anyway`, a scope some replica swept within its interval since this
        one ranked it is left alone (None): replicas share the schedule.
        """
        return await self.leased.sweep(scope, full=full, anyway=anyway)

    async def _discover_step(self, feed: _Feed) -> bool:
        """Ask Absorb for a feed's scopes again (an every-course feed's course list)."""
        try:
            feed.scopes = await discover_scopes(feed.spec, self.client)
        except BridgeError as e:
            self.health["absorb"] = str(e)[:300]
            raise
        feed.discovered_at = clock.monotonic()
        self.health["absorb"] = "ok"
        return False

    async def _discover(self, feed: _Feed) -> None:
        """Discover a feed's scopes when stale; a failure keeps the ones known, if any."""
        stale = feed.discovered_at is None or (
            clock.monotonic() - feed.discovered_at > self.timing.discovery_interval_s
        )
        if not stale:
            return
        try:
            await self._discover_step(feed)
        except BridgeError as e:
            log.error("feed.discovery_failed", feed=feed.spec.name, error=str(e))
            if feed.discovered_at is None:
                raise

    # -- Redis and stats ------------------------------------------------------------------

    async def _stats_step(self) -> bool:
        await self.refresh_stats()
        return False

    async def _trim_step(self) -> bool:
        dropped = await self.store.trim_outbox(keep=[w.sink.name for w in self.workers])
        log.debug("outbox.trimmed", entries=dropped)
        return False

    async def check_redis_data(self) -> bool:
        """Whether Redis lost the bridge's data since the last look (then recovered from it)."""
        return await self.upkeep.check_redis_data()

    async def refresh_stats(self) -> None:
        """Check Redis (reachable, settings, data not lost) and set the gauges that need it."""
        await self.upkeep.refresh()
        with contextlib.suppress(RedisError):  # refresh said Redis is unreachable already
            await self._publish_loop_health()
        ready, _ = self.readiness()
        metrics.READY.set(int(ready))

    async def _publish_loop_health(self) -> None:
        """Tell `status` (through Redis) which of this replica's loops are dead or stalled."""
        health = replicas.LoopHealth(
            replica=self.replica_id,
            at=clock.now().timestamp(),
            loops=len(self.loops.loops),
            # Why a loop is in trouble quotes its last error: no secret may travel with it.
            dead={name: logs.masked_text(why) for name, why in self.loops.dead().items()},
            stalled={name: logs.masked_text(why) for name, why in self.loops.stalled().items()},
        )
        ttl_s = max(30.0, 6 * self.timing.stats_interval_s)
        await replicas.publish(self.store.redis, self.store.prefix, health, ttl_s)

    async def deliver_once(self) -> int:
        """Feed and deliver every sink until nothing more goes; returns the events delivered."""
        return await self.lanes.deliver_once()


def _worker(
    store: Store, sink: Sink, routes: Sequence[Route], options: DeliveryOptions
) -> SinkWorker:
    return SinkWorker(
        store.redis,
        store.prefix,
        sink,
        routes,
        consumer=store.owner,
        schedule=options.schedule_s,
        max_in_flight=options.max_in_flight,
        rate_limit_per_s=options.rate_limit_per_s,
        max_dead_letters=options.max_dead_letters,
        personal_data=options.personal_data,
    )


async def _finish(tasks: Sequence[asyncio.Task[Any]], timeout_s: float) -> None:
    """Wait for tasks up to a timeout, then cancel the rest."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
