"""The daemon: one object that sweeps every feed's scopes and delivers the outbox to every sink.

Its loops are steppable: `sweep_once()` sweeps every scope that is due and whose
lease this replica can take, `deliver_once()` moves the outbox to the sinks. The
daemon repeats them; tests call them directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from redis.exceptions import RedisError

from bridge import clock, metrics
from bridge.absorb.client import AbsorbClient
from bridge.absorb.timefmt import format_rfc3339, parse_datetime
from bridge.delivery import SinkWorker
from bridge.delivery.policy import DEFAULT_SCHEDULE_S
from bridge.errors import AbsorbError, BridgeError
from bridge.feeds import FeedSpec, Scope, discover_scopes
from bridge.routes import Route
from bridge.sinks.base import Sink
from bridge.store import Fenced, Store
from bridge.sweep import Sweeper, SweepResult, from_us

log = structlog.get_logger(__name__)

#: How long a sink's loop rests when it found nothing to feed or deliver.
_IDLE_DELIVERY_S = 0.1
#: The longest pause between tries while a dependency is down.
_MAX_BACKOFF_S = 15.0


@dataclass(frozen=True)
class Timing:
    """How the daemon paces itself."""

    #: A replica that dies mid-sweep holds its scopes at most this long.
    lease_ttl_s: float = 30.0
    #: How often the list of courses of an every-course feed is asked again.
    discovery_interval_s: float = 600.0
    #: Scopes swept at once by one replica (they share the Absorb request budget).
    concurrency: int = 4
    #: How long the loop rests when nothing was due.
    idle_s: float = 1.0
    #: Grace period on stop before in-flight work is cancelled.
    grace_s: float = 10.0
    #: How often outbox entries every sink has acknowledged are dropped.
    trim_interval_s: float = 60.0
    #: How often Redis is checked and the gauges that need Redis are set.
    stats_interval_s: float = 10.0


@dataclass(frozen=True)
class DeliveryOptions:
    """How one sink is delivered to."""

    schedule_s: tuple[float, ...] = DEFAULT_SCHEDULE_S
    max_in_flight: int = 8
    rate_limit_per_s: float | None = None


@dataclass
class _Feed:
    spec: FeedSpec
    scopes: list[Scope] = field(default_factory=list)
    discovered_at: float | None = None


class Bridge:
    """Sweeps, detects and delivers until stopped."""

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
        #: Set once sweeping has stopped, so delivery can drain what the last sweeps wrote.
        self._drain = asyncio.Event()
        self._sweeping: asyncio.Task[None] | None = None
        self._delivering: list[asyncio.Task[None]] = []
        self._stats: asyncio.Task[None] | None = None
        self._stopped = False
        #: Per dependency: "ok" or what is wrong with it ("starting" until first checked).
        self.health: dict[str, str] = {"redis": "starting", "absorb": "starting"}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Run the sweep, delivery and stats loops (each sink is opened by its own loop).

        Nothing here needs Redis, Absorb or a sink to be up: every loop retries
        with backoff and the bridge reports itself not ready meanwhile.
        """
        self._sweeping = asyncio.create_task(self._sweep_loop(), name="sweep")
        self._delivering = [
            asyncio.create_task(self._deliver_loop(w), name=f"deliver-{w.sink.name}")
            for w in self.workers
        ]
        self._stats = asyncio.create_task(self._stats_loop(), name="stats")

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Whether the bridge can do its work, and what is wrong when it cannot."""
        problems = {k: v for k, v in self.health.items() if v != "ok"}
        return not problems, dict(self.health)

    async def stop(self) -> None:
        """Stop sweeping, let delivery drain the outbox, all within the grace period; idempotent.

        What is still undelivered when the grace period ends stays in the outbox and
        goes out after the next start.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        deadline = asyncio.get_running_loop().time() + self.timing.grace_s
        if self._sweeping is not None:
            await _finish([self._sweeping], self.timing.grace_s)
        self._drain.set()
        await _finish(self._delivering, max(0.0, deadline - asyncio.get_running_loop().time()))
        if self._stats is not None:
            await _finish([self._stats], 0)
        for sink in self.sinks:
            await sink.close()

    # -- sweeping --------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        trimmed_at = clock.monotonic()
        failures = 0
        while not self._stop.is_set():
            try:
                swept = await self.sweep_once()
                failures = 0
            except (BridgeError, RedisError) as e:
                failures += 1
                swept = 0
                key = "redis" if isinstance(e, RedisError) else "absorb"
                self.health[key] = str(e)[:300]
                log.error("sweep.failed", error=str(e), failures=failures)
            if clock.monotonic() - trimmed_at > self.timing.trim_interval_s:
                trimmed_at = clock.monotonic()
                with contextlib.suppress(RedisError):
                    dropped = await self.store.trim_outbox()
                    log.debug("outbox.trimmed", entries=dropped)
            if not swept:
                pause = min(_MAX_BACKOFF_S, self.timing.idle_s * 2**failures)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), pause)

    async def sweep_once(self, *, force: bool = False) -> int:
        """Sweep every scope that is due (all of them with `force`); returns how many were swept."""
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
                return await self.sweep_scope(scope, full=full) is not None

        done = await asyncio.gather(*(one(s, full) for s, full in due))
        return sum(done)

    async def sweep_scope(self, scope: Scope, *, full: bool = False) -> SweepResult | None:
        """Sweep one scope under its lease; None when another replica holds it."""
        feed, ttl_ms = scope.feed.name, int(self.timing.lease_ttl_s * 1000)
        token = await self.store.acquire(feed, scope.key, ttl_ms)
        if token is None:
            return None
        renewer = asyncio.create_task(self._renew(scope, token, ttl_ms))
        held = metrics.LEASES_HELD.labels(feed)
        held.inc()
        started = clock.monotonic()
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
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with contextlib.suppress(RedisError):  # the lease expires by itself anyway
                await self.store.release(feed, scope.key, token)
        self.health["absorb"] = "ok"
        metrics.SWEEPS.labels(feed, "ok").inc()
        metrics.RECORDS_READ.labels(feed).inc(result.records)
        for event_type, count in result.types.items():
            metrics.EVENTS_EMITTED.labels(feed, event_type).inc(count)
        await self._schedule(scope, result)
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

    async def _renew(self, scope: Scope, token: str, ttl_ms: int) -> None:
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            try:
                held = await self.store.renew(scope.feed.name, scope.key, token, ttl_ms)
            except RedisError as e:
                log.warning(
                    "lease.renew_failed", feed=scope.feed.name, scope=scope.key, error=str(e)
                )
                continue
            if not held:
                log.warning("lease.lost", feed=scope.feed.name, scope=scope.key)
                return

    async def _discover(self, feed: _Feed) -> None:
        now = clock.monotonic()
        stale = feed.discovered_at is None or (
            now - feed.discovered_at > self.timing.discovery_interval_s
        )
        if not stale:
            return
        try:
            feed.scopes = await discover_scopes(feed.spec, self.client)
            feed.discovered_at = now
            self.health["absorb"] = "ok"
        except BridgeError as e:
            log.error("feed.discovery_failed", feed=feed.spec.name, error=str(e))
            self.health["absorb"] = str(e)[:300]
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

    async def _open(self, worker: SinkWorker) -> bool:
        """Open a sink and its consumer group, retrying with backoff; False if stopped first."""
        failures = 0
        while not self._stop.is_set():
            try:
                await worker.sink.start()
                await worker.setup()
                return True
            except (BridgeError, RedisError, OSError) as e:
                failures += 1
                log.error("sink.start_failed", sink=worker.sink.name, error=str(e))
                with contextlib.suppress(TimeoutError):
                    pause = min(_MAX_BACKOFF_S, 0.5 * 2**failures)
                    await asyncio.wait_for(self._stop.wait(), pause)
        return False

    async def _deliver_loop(self, worker: SinkWorker) -> None:
        if not await self._open(worker):
            return
        # The feed and each delivery lane repeat on their own: Redis runs one's script
        # while this process prepares another's batch.
        async with asyncio.TaskGroup() as group:
            group.create_task(self._repeat(worker, worker.feed_once))
            for _ in range(worker.lanes):
                group.create_task(self._repeat(worker, worker.deliver_once))
        # Sweeping has stopped once `_drain` is set: deliver what the last sweeps wrote,
        # until caught up or stop()'s deadline cancels this task.
        await self._drain.wait()
        with contextlib.suppress(BridgeError, RedisError):
            while await self._deliver_step(worker):
                pass

    async def _repeat(self, worker: SinkWorker, step: Callable[[], Awaitable[int]]) -> None:
        """Repeat a delivery step until stopped, resting when idle and backing off on errors."""
        failures = 0
        while not self._stop.is_set():
            try:
                busy = bool(await step())
                failures = 0
            except (BridgeError, RedisError) as e:
                log.error("delivery.loop_failed", sink=worker.sink.name, error=str(e))
                busy, failures = False, failures + 1
            if not busy:
                pause = (
                    min(_MAX_BACKOFF_S, 0.5 * 2 ** min(failures, 6))
                    if failures
                    else _IDLE_DELIVERY_S
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), pause)

    async def _deliver_step(self, worker: SinkWorker) -> bool:
        return await worker.step()

    # -- stats ----------------------------------------------------------------------------

    async def _stats_loop(self) -> None:
        while not self._stop.is_set():
            await self.refresh_stats()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.timing.stats_interval_s)

    async def refresh_stats(self) -> None:
        """Check Redis and set the gauges that need a look at Redis (lag, backlogs, queues)."""
        try:
            await self.store.redis.ping()
            self.health["redis"] = "ok"
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
    )


async def _finish(tasks: Sequence[asyncio.Task[None]], timeout_s: float) -> None:
    """Wait for tasks up to a timeout, then cancel the rest."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
