"""One scope's sweep under its lease, as the daemon runs it.

The lease keeps every other replica off the scope while this one sweeps it, and a
loop renews it meanwhile. The completed sweep is recorded for the scheduler under
the lease, so the replica that takes the scope next sees it. What goes wrong is the
scope's own failure: logged, counted and kept as the scope's `last_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from functools import partial

import structlog
from redis.exceptions import RedisError

from bridge import clock, metrics
from bridge.errors import AbsorbError, BridgeError
from bridge.feeds import Scope
from bridge.schedule.runner import Scheduler
from bridge.store import Fenced, Store
from bridge.supervise import Supervisor
from bridge.sweep import Sweeper, SweepResult

log = structlog.get_logger(__name__)


class LeasedSweeps:
    """Sweeps one scope at a time under its lease; see the module's docstring.

    `health` is the daemon's dependency health, whose `absorb` entry a sweep sets;
    `data_losses` counts how often Redis was found to have lost the bridge's data.
    """

    def __init__(
        self,
        *,
        store: Store,
        sweeper: Sweeper,
        scheduler: Scheduler,
        loops: Supervisor,
        health: dict[str, str],
        lease_ttl_s: float,
        data_losses: Callable[[], int],
    ) -> None:
        self.store = store
        self.sweeper = sweeper
        self.scheduler = scheduler
        self.loops = loops
        self.health = health
        self.lease_ttl_ms = int(lease_ttl_s * 1000)
        self.data_losses = data_losses

    async def sweep(
        self, scope: Scope, *, full: bool = False, anyway: bool = True
    ) -> SweepResult | None:
        """Sweep one scope under its lease; None when another replica holds it.

        Unless `anyway`, a scope some replica swept within its interval since this
        one ranked it is left alone (None): replicas share the schedule.
        """
        feed, ttl_ms = scope.feed.name, self.lease_ttl_ms
        token = await self.store.acquire(feed, scope.key, ttl_ms)
        if token is None:
            return None
        if not anyway and await self.scheduler.swept_since(scope):
            await self.store.release(feed, scope.key, token)
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
        started, losses = clock.monotonic(), self.data_losses()
        began = clock.now().timestamp()
        try:
            result = await self.sweeper.sweep(scope, token, full=full)
            # Recorded under the lease: a replica that takes it next sees this sweep.
            await self.scheduler.swept(
                scope, started=began, changed=result.changed, cost=result.pages
            )
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
        if self.data_losses() != losses:
            await self.store.drop_unfounded_baseline(feed, scope.key)
        self.health["absorb"] = "ok"
        metrics.SWEEPS.labels(feed, "ok").inc()
        metrics.RECORDS_READ.labels(feed).inc(result.records)
        for event_type, count in result.types.items():
            metrics.EVENTS_EMITTED.labels(feed, event_type).inc(count)
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
