"""Upkeep of the daemon's Redis: reachable, safely configured, its data not lost; gauges.

Every `Timing.stats_interval_s` the daemon checks that Redis answers, warns once
when its settings can lose data, notices when the data was lost (the marker,
`keys.marker`) and recovers, and sets the gauges that need Redis: outbox, lag,
quarantine, sink backlogs, and each feed's scope ages and the interval the budget keeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog
from redis.exceptions import RedisError

from bridge import clock, metrics
from bridge.delivery import SinkWorker
from bridge.feeds import FeedSpec, Scope
from bridge.schedule.figures import figures
from bridge.store import Store, redis_risks
from bridge.sweep import from_us

log = structlog.get_logger(__name__)


class Upkeep:
    """Redis checks and the gauges that need Redis, for one daemon."""

    def __init__(
        self,
        store: Store,
        workers: Sequence[SinkWorker],
        feeds: Callable[[], list[tuple[FeedSpec, list[Scope]]]],
        health: dict[str, str],
        *,
        requests_per_s: float,
        check_settings: bool = True,
    ) -> None:
        self.store = store
        self.workers = workers
        self.feeds = feeds
        #: The daemon's health checks: "redis" is set here.
        self.health = health
        self.requests_per_s = requests_per_s
        #: How often Redis was found to have lost its data: a sweep across a loss is suspect.
        self.data_losses = 0
        #: The marker this replica last saw in Redis (None until first looked at).
        self._marker: str | None = None
        self._checking_data = asyncio.Lock()
        #: Whether Redis's persistence and eviction settings are still to be checked.
        self._settings_checked = not check_settings
        #: The shortfall last logged per feed (logged again only when it changes).
        self._shortfalls: dict[str, str | None] = {}

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
            self.data_losses += 1
            self._marker = await self.store.ensure_marker()
            for worker in self.workers:
                await worker.setup()
            for spec, scopes in self.feeds():
                for scope in scopes:
                    await self.store.drop_unfounded_baseline(spec.name, scope.key)
            return True

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

    async def refresh(self) -> None:
        """Check Redis (reachable, settings, data not lost) and set the gauges that need it."""
        try:
            await self.store.redis.ping()
            self.health["redis"] = "ok"
            await self._check_settings()
            await self.check_redis_data()
            metrics.OUTBOX_LENGTH.set(await self.store.outbox_length())
            await self._schedule_stats()
            for spec, _ in self.feeds():
                name = spec.name
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

    async def _schedule_stats(self) -> None:
        """Scope ages and the interval the budget keeps, per feed; a shortfall is logged."""
        specs = [spec for spec, _ in self.feeds()]
        now = clock.now().timestamp()
        for fig in await figures(self.store, specs, self.requests_per_s, now):
            for quantile, age in (
                ("0.5", fig.age_p50_s),
                ("0.99", fig.age_p99_s),
                ("1", fig.age_max_s),
            ):
                metrics.SCOPE_AGE.labels(fig.feed, quantile).set(age or 0.0)
            metrics.KEEPABLE_INTERVAL.labels(fig.feed).set(fig.keepable_s)
            if (warning := fig.warning()) and warning != self._shortfalls.get(fig.feed):
                log.warning("schedule.shortfall", feed=fig.feed, problem=warning)
            self._shortfalls[fig.feed] = warning

    async def _lag(self, feed: str) -> float:
        now = clock.now()
        oldest = 0.0
        for key in await self.store.known_scopes(feed):
            watermark = (await self.store.scope_state(feed, key)).get("watermark")
            if watermark:
                oldest = max(oldest, (now - from_us(int(watermark))).total_seconds())
        return oldest
