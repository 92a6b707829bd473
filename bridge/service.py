"""The daemon: one object that sweeps every feed's scopes and delivers the outbox to every sink.

Its loops are steppable: `sweep_once()` sweeps every scope that is due and whose
lease this replica can take, `deliver_once()` moves the outbox to the sinks. The
daemon repeats their steps, each loop under `bridge.supervise` so that no exception
ends it; tests call the steps directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
from redis.exceptions import RedisError, ResponseError

from bridge import clock, metrics
from bridge.absorb.client import AbsorbClient
from bridge.absorb.timefmt import format_rfc3339, parse_datetime
from bridge.delivery import SinkWorker
from bridge.delivery.policy import DEFAULT_SCHEDULE_S
from bridge.errors import AbsorbError, BridgeError
from bridge.feeds import FeedSpec, Scope, discover_scopes, scopes_of_course, scopes_of_user
from bridge.hints import Hints
from bridge.notices import NoticeListener
from bridge.notices.resolve import NoticeResolver
from bridge.routes import Route
from bridge.sinks.base import Sink
from bridge.store import Fenced, Store, redis_risks
from bridge.supervise import Bounds, Supervisor, backoff_s
from bridge.sweep import Sweeper, SweepResult, from_us

log = structlog.get_logger(__name__)

#: How long a sink's loop rests when it found nothing to feed or deliver.
_IDLE_DELIVERY_S = 0.1


@dataclass(frozen=True)
class Timing:
    """How the daemon paces itself, and how long its loops may go quiet before health says so."""

    #: A replica that dies mid-sweep holds its scopes at most this long.
    lease_ttl_s: float = 30.0
    #: How often the list of courses of an every-course feed is asked again.
    discovery_interval_s: float = 600.0
    #: Scopes swept at once by one replica (they share the Absorb request budget).
    concurrency: int = 4
    #: How long the scheduler rests when nothing was due.
    idle_s: float = 1.0
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
        self.sinks = list(sinks)
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
        #: Scope sweeps under way, by (feed, scope).
        self._sweeps: dict[tuple[str, str], asyncio.Task[bool]] = {}
        #: When each of the sweeps under way started (monotonic).
        self._sweep_started: dict[tuple[str, str], float] = {}
        #: Scopes found due, waiting for a sweep slot.
        self._due_queue: list[tuple[Scope, bool]] = []
        #: Scopes whose last sweep did not complete: failures in a row, and when to try again.
        self._resting: dict[tuple[str, str], tuple[int, float]] = {}
        self._opening: list[asyncio.Task[None]] = []
        self._delivering: list[asyncio.Task[None]] = []
        self._opened: list[SinkWorker] = []
        self._started: set[str] = set()
        self._upkeep: list[asyncio.Task[None]] = []
        self._stopped = False
        #: The marker this replica last saw in Redis (None until first looked at).
        self._marker: str | None = None
        #: How often Redis was found to have lost its data: a sweep across a loss is suspect.
        self._data_losses = 0
        self._checking_data = asyncio.Lock()
        #: Whether Redis's persistence and eviction settings are still to be checked.
        self._settings_checked = not check_redis_settings
        #: Per dependency: "ok" or what is wrong with it ("starting" until first checked).
        self.health: dict[str, str] = {"redis": "starting", "absorb": "starting"}
        self.hints = Hints(store.redis, store.prefix)
        self.notices = (
            None
            if notices is None
            else NoticeResolver(
                notices.queue, client=client, hints=self.hints, targets=self, counts=notices.counts
            )
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every loop: scheduler, discovery, each sink's opening, stats and trimming.

        Nothing here needs Redis, Absorb or a sink to be up: every loop retries
        with backoff and the bridge reports itself not ready meanwhile.
        """
        t, spawn = self.timing, self.loops.spawn
        self._sweeping = [spawn("schedule", self._schedule_once, idle_s=t.idle_s)]
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
        for worker in self.workers:
            name = worker.sink.name
            opening = spawn(
                f"open:{name}",
                partial(self._open_step, worker),
                idle_s=_IDLE_DELIVERY_S,
                until_done=True,
                sink=name,
            )
            opening.add_done_callback(partial(self._sink_opened, worker))
            self._opening.append(opening)
        self._upkeep = [
            spawn("stats", self._stats_step, idle_s=t.stats_interval_s),
            spawn("trim", self._trim_step, idle_s=t.trim_interval_s, rest_first=True),
        ]
        if self.notices is not None:
            self._sweeping.append(spawn("notices", self.notices.resolve_once, idle_s=0.0))

    def scopes_for_course(self, course_id: str) -> list[tuple[str, str]]:
        """Every (feed, scope key) whose sweep lists enrollments of the course."""
        return [
            (f.spec.name, s.key) for f in self.feeds for s in scopes_of_course(f.scopes, course_id)
        ]

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
            for (feed, scope), at in self._sweep_started.items()
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
        await _finish([*self._sweeping, *self._sweeps.values()], self.timing.grace_s)
        await _finish([*self._opening, *self._delivering], max(0.0, deadline - running.time()))
        # Sweeping has stopped: deliver what the last sweeps wrote, until caught up or
        # the grace period ends.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(self._drain(w) for w in self._opened)),
                max(0.0, deadline - running.time()),
            )
        await _finish(self._upkeep, 0)
        for worker in self.workers:
            with contextlib.suppress(RedisError):  # the feeder lease runs out by itself anyway
                await worker.release()
        for sink in self.sinks:
            await sink.close()

    # -- sweeping --------------------------------------------------------------------------

    async def _schedule_once(self) -> int:
        """Give free sweep slots to due scopes; how many sweeps started.

        Scopes are checked once a round: the due ones wait in a queue for a slot (up
        to `concurrency` sweep at once, each on its own, so one long or failing
        sweep holds only its slot), and the next round's check comes once the
        queue is empty. With every slot taken this waits (up to `idle_s`) for one.
        """
        if not self._due_queue:
            self._due_queue = await self._due_scopes()
        else:
            await self._hinted_first()
        started = 0
        while self._due_queue and len(self._sweeps) < self.timing.concurrency:
            if self._stop.is_set():
                return started
            scope, full = self._due_queue.pop()
            key = (scope.feed.name, scope.key)
            if key in self._sweeps:
                continue
            sweep = self._sweep_guarded(scope, full=full)
            (task := asyncio.create_task(sweep)).add_done_callback(partial(self._swept, key))
            self._sweeps[key] = task
            self._sweep_started[key] = clock.monotonic()
            started += 1
        if self._due_queue:
            await asyncio.wait(
                list(self._sweeps.values()),
                timeout=self.timing.idle_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        return started or len(self._due_queue)

    async def _due_scopes(self) -> list[tuple[Scope, bool]]:
        """The scopes due now that are neither being swept nor resting after a failure."""
        now = clock.monotonic()
        due: list[tuple[Scope, bool]] = []
        for feed in self.feeds:
            hinted = await self.hints.pending(feed.spec.name)  # hint hook: hinted scopes are due
            for scope in feed.scopes:
                if not self._idle(scope, now):
                    continue
                full = await self._due(scope, force=scope.key in hinted)
                if full is not None:
                    due.append((scope, full))
        random.shuffle(due)  # replicas that start together should not chase the same scopes
        return due

    async def _hinted_first(self) -> None:
        """Hint hook: scopes with a pending hint move to the head of the due queue."""
        for feed in self.feeds:
            pending = await self.hints.pending(feed.spec.name)
            if not pending:
                continue
            now = clock.monotonic()
            hinted = [s for s in feed.scopes if s.key in pending and self._idle(s, now)]
            named = {(feed.spec.name, s.key) for s in hinted}
            rest = [e for e in self._due_queue if (e[0].feed.name, e[0].key) not in named]
            self._due_queue = rest + [(s, False) for s in hinted]  # pop() takes from the end

    def _idle(self, scope: Scope, now: float) -> bool:
        """Whether a scope is neither being swept nor resting after a failure."""
        key = (scope.feed.name, scope.key)
        return key not in self._sweeps and self._resting.get(key, (0, now))[1] <= now

    def _swept(self, key: tuple[str, str], _task: asyncio.Task[bool]) -> None:
        self._sweeps.pop(key, None)
        self._sweep_started.pop(key, None)

    async def sweep_once(self, *, force: bool = False) -> int:
        """Sweep every scope that is due (all of them with `force`); returns how many were swept.

        A scope whose sweep fails, whatever the error, is logged and counted; the
        others go on.
        """
        due: list[tuple[Scope, bool]] = []
        for feed in self.feeds:
            await self._discover(feed)
            for scope in feed.scopes:
                verdict = await self._due(scope, force=force)
                if verdict is not None:
                    due.append((scope, verdict))
        random.shuffle(due)  # replicas that start together should not chase the same scopes
        gate = asyncio.Semaphore(self.timing.concurrency)

        async def one(scope: Scope, full: bool) -> bool:
            async with gate:
                if self._stop.is_set():
                    return False
                return await self._sweep_guarded(scope, full=full)

        done = await asyncio.gather(*(one(s, full) for s, full in due))
        return sum(done)

    async def _sweep_guarded(self, scope: Scope, *, full: bool) -> bool:
        """Sweep one scope; any error is the scope's failure, logged and counted, never more."""
        step = partial(self._sweep_recorded, scope, full)
        result = await self.loops.attempt("sweep", step, feed=scope.feed.name, scope=scope.key)
        key = (scope.feed.name, scope.key)
        if result is not None:
            self._resting.pop(key, None)
            return True
        # Failed, fenced or held by another replica: the scheduler leaves it alone a while.
        failures = self._resting.get(key, (0, 0.0))[0] + 1
        pause = backoff_s(failures, base_s=self.timing.idle_s)
        self._resting[key] = (failures, clock.monotonic() + pause)
        return False

    async def _sweep_recorded(self, scope: Scope, full: bool) -> SweepResult | None:
        try:
            return await self.sweep_scope(scope, full=full)
        except Exception as e:
            # What sweep_scope does not expect still shows as the scope's failure.
            metrics.SWEEPS.labels(scope.feed.name, "failed").inc()
            text = f"{type(e).__name__}: {e}"[:500]
            with contextlib.suppress(RedisError):
                await self.store.set_scope_state(scope.feed.name, scope.key, {"last_error": text})
            raise

    async def sweep_scope(self, scope: Scope, *, full: bool = False) -> SweepResult | None:
        """Sweep one scope under its lease; None when another replica holds it."""
        feed, ttl_ms = scope.feed.name, int(self.timing.lease_ttl_s * 1000)
        token = await self.store.acquire(feed, scope.key, ttl_ms)
        if token is None:
            return None
        lease_done = asyncio.Event()
        renewer = self.loops.spawn(
            "renew",
            partial(self._renew_step, scope, token, ttl_ms),
            idle_s=ttl_ms / 3000,
            until_done=True,
            rest_first=True,
            watched=False,
            stop=lease_done,
            feed=feed,
            scope=scope.key,
        )
        held = metrics.LEASES_HELD.labels(feed)
        held.inc()
        started, losses = clock.monotonic(), self._data_losses
        swept_from = clock.now().timestamp()  # hint hook: a notice after this waits for the next
        try:
            result = await self.sweeper.sweep(scope, token, full=full)
        except Fenced as e:
            log.warning("sweep.fenced", feed=feed, scope=scope.key, error=str(e))
            metrics.SWEEPS.labels(feed, "fenced").inc()
            return None
        except BridgeError as e:
            log.error("sweep.scope_failed", feed=feed, scope=scope.key, error=str(e))
            metrics.SWEEPS.labels(feed, "failed").inc()
            if isinstance(e, AbsorbError):
                self.health["absorb"] = str(e)[:300]
            await self.store.set_scope_state(feed, scope.key, {"last_error": str(e)[:500]})
            return None
        finally:
            held.dec()
            metrics.SWEEP_DURATION.labels(feed).observe(clock.monotonic() - started)
            lease_done.set()
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with contextlib.suppress(RedisError):  # the lease expires by itself anyway
                await self.store.release(feed, scope.key, token)
        if self._data_losses != losses:
            await self.store.drop_unfounded_baseline(feed, scope.key)
        self.health["absorb"] = "ok"
        metrics.SWEEPS.labels(feed, "ok").inc()
        metrics.RECORDS_READ.labels(feed).inc(result.records)
        for event_type, count in result.types.items():
            metrics.EVENTS_EMITTED.labels(feed, event_type).inc(count)
        await self._schedule(scope, result)
        await self.hints.clear(feed, scope.key, swept_from=swept_from)  # hint hook
        (log.info if result.events else log.debug)(
            "sweep.done",
            feed=feed,
            scope=scope.key,
            records=result.records,
            events=result.events,
            pages=result.pages,
            full=full,
        )
        return result

    async def _renew_step(self, scope: Scope, token: str, ttl_ms: int) -> bool:
        """Extend a sweep's lease; true once it is lost (its loop then ends)."""
        if await self.store.renew(scope.feed.name, scope.key, token, ttl_ms):
            return False
        log.warning("lease.lost", feed=scope.feed.name, scope=scope.key)
        return True

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

    async def _due(self, scope: Scope, *, force: bool) -> bool | None:
        """None if not due; else whether the sweep should be a full reconciliation."""
        state = await self.store.scope_state(scope.feed.name, scope.key)
        now = clock.now()
        reconciled = state.get("reconciled_at") or state.get("created_at")
        full = reconciled is not None and (
            (now - parse_datetime(reconciled)).total_seconds() >= scope.feed.reconcile_every_s
        )
        if "created_at" not in state:
            await self.store.set_scope_state(
                scope.feed.name, scope.key, {"created_at": format_rfc3339(now)}
            )
        if force:
            return full
        next_at = state.get("next_at")
        if next_at is not None and parse_datetime(next_at) > now:
            return None
        return full

    async def _schedule(self, scope: Scope, result: SweepResult) -> None:
        """Quiet scopes back off (doubling up to `max_interval`); a change resets the pace."""
        feed = scope.feed
        state = await self.store.scope_state(feed.name, scope.key)
        interval = float(state.get("interval_s", feed.interval_s))
        if result.events or result.changed:
            interval = feed.interval_s
        else:
            interval = min(max(feed.interval_s, interval * 2), feed.max_interval_s)
        next_at = clock.now() + timedelta(seconds=interval)
        await self.store.set_scope_state(
            feed.name,
            scope.key,
            {
                "interval_s": f"{interval:g}",
                "next_at": format_rfc3339(next_at),
                "last_error": "",
            },
        )

    # -- delivering ------------------------------------------------------------------------

    async def _open_step(self, worker: SinkWorker) -> bool:
        """Open a sink (once, though creating its consumer group may need another try)."""
        if worker.sink.name not in self._started:
            await worker.sink.start()
            self._started.add(worker.sink.name)
        await worker.setup()
        return True

    def _sink_opened(self, worker: SinkWorker, opening: asyncio.Task[None]) -> None:
        """Once a sink is open, its feed and each delivery lane repeat on their own.

        Redis runs one's script while this process prepares another's batch.
        """
        name = worker.sink.name
        if self._stop.is_set() or not self.loops.loops[f"open:{name}"].finished:
            return
        self._opened.append(worker)
        steps: list[tuple[str, Callable[[], Awaitable[int]]]] = [(f"feed:{name}", worker.feed_once)]
        steps += [(f"deliver:{name}:{n + 1}", worker.deliver_once) for n in range(worker.lanes)]
        for loop, step in steps:
            self._delivering.append(
                self.loops.spawn(
                    loop,
                    partial(self._delivery_step, worker, step),
                    idle_s=_IDLE_DELIVERY_S,
                    sink=name,
                )
            )

    async def _delivery_step(self, worker: SinkWorker, step: Callable[[], Awaitable[int]]) -> int:
        try:
            return await step()
        except ResponseError as e:
            if "NOGROUP" in str(e):
                # The sink's consumer group is gone: Redis may have lost its data.
                await self._regroup(worker)
            raise

    async def _drain(self, worker: SinkWorker) -> None:
        async def drain() -> None:
            while await self._deliver_step(worker):
                pass

        await self.loops.attempt(f"drain:{worker.sink.name}", drain, sink=worker.sink.name)

    async def _deliver_step(self, worker: SinkWorker) -> bool:
        return await worker.step()

    # -- Redis and stats ------------------------------------------------------------------

    async def _stats_step(self) -> bool:
        await self.refresh_stats()
        return False

    async def _trim_step(self) -> bool:
        dropped = await self.store.trim_outbox(keep=[w.sink.name for w in self.workers])
        log.debug("outbox.trimmed", entries=dropped)
        return False

    async def check_redis_data(self) -> bool:
        """Whether Redis lost the bridge's data since the last look; if so, recover from it.

        The first look writes the marker (`keys.marker`) if there is none. Recovering
        recreates every sink's consumer group; the scopes, whose state is gone too,
        baseline again by their `first_sync` at their next sweep.
        """
        async with self._checking_data:
            if self._marker is None:
                self._marker = await self.store.ensure_marker()
                return False
            if await self.store.marker() == self._marker:
                return False
            metrics.REDIS_DATA_LOST.inc()
            log.error(
                "redis.data_lost",
                error="Redis lost the bridge's data (restart without persistence, failover "
                "to an empty replica, or a flush); changes made in Absorb since the last "
                "sweep before the loss may have been missed, and undelivered events are gone",
                hint="scopes baseline again; run `absorb-bridge resync` after checking Redis's "
                "persistence (appendonly yes, maxmemory-policy noeviction)",
            )
            self._data_losses += 1
            self._marker = await self.store.ensure_marker()
            for worker in self.workers:
                await worker.setup()
            for feed in self.feeds:
                for scope in feed.scopes:
                    await self.store.drop_unfounded_baseline(feed.spec.name, scope.key)
            return True

    async def _regroup(self, worker: SinkWorker) -> None:
        """A sink's consumer group is gone: recover all if Redis lost its data, else the group."""
        if not await self.check_redis_data():
            log.warning("sink.group_recreated", sink=worker.sink.name)
            await worker.setup()

    async def _check_settings(self) -> None:
        """Warn, once, when Redis's settings can lose the bridge's data."""
        if self._settings_checked:
            return
        settings = await self.store.redis_settings()
        self._settings_checked = True
        if settings is None:
            log.warning(
                "redis.settings_unchecked",
                reason="CONFIG GET is refused; make sure Redis has appendonly yes and "
                "maxmemory-policy noeviction",
            )
            return
        risks = redis_risks(settings)
        if risks:
            log.warning("redis.data_at_risk", problems=risks)

    async def refresh_stats(self) -> None:
        """Check Redis (reachable, settings, data not lost) and set the gauges that need it."""
        try:
            await self.store.redis.ping()
            self.health["redis"] = "ok"
            await self._check_settings()
            await self.check_redis_data()
            metrics.OUTBOX_LENGTH.set(await self.store.outbox_length())
            for feed in self.feeds:
                name = feed.spec.name
                metrics.WATERMARK_LAG.labels(name).set(await self._lag(name))
                metrics.QUARANTINED.labels(name).set(len(await self.store.quarantined(name)))
            for worker in self.workers:
                counts = await worker.backlog()
                sink = worker.sink.name
                metrics.SINK_BACKLOG.labels(sink).set(
                    counts["lag"] + counts["pending"] + counts["queued"]
                )
                metrics.SINK_RETRYING.labels(sink).set(counts["retrying"])
                metrics.SINK_DEAD_LETTERS.labels(sink).set(counts["dead_lettered"])
                metrics.SINK_DISABLED.labels(sink).set(
                    int(await worker.queue.disabled() is not None)
                )
        except RedisError as e:
            self.health["redis"] = f"unreachable: {e}"
            log.error("redis.unreachable", error=str(e))
        ready, _ = self.readiness()
        metrics.READY.set(int(ready))

    async def _lag(self, feed: str) -> float:
        now = clock.now()
        oldest = 0.0
        for key in await self.store.known_scopes(feed):
            watermark = (await self.store.scope_state(feed, key)).get("watermark")
            if watermark:
                oldest = max(oldest, (now - from_us(int(watermark))).total_seconds())
        return oldest

    async def deliver_once(self) -> int:
        """Feed and deliver every sink until nothing more goes; returns the events delivered."""
        before = sum(w.delivered for w in self.workers)
        for worker in self.workers:
            while await self._deliver_step(worker):
                pass
        return sum(w.delivered for w in self.workers) - before


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
