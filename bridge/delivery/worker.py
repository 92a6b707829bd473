"""Delivering to one sink: feed its queue from the outbox, then try what is due."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bridge import clock, metrics
from bridge.absorb.timefmt import format_rfc3339
from bridge.delivery.policy import DEFAULT_SCHEDULE_S, Circuit, next_delay_s
from bridge.delivery.queue import DeliveryQueue, Queued
from bridge.ratelimit import TokenBucket
from bridge.routes import Route, sinks_for
from bridge.sinks.base import Delivery, Sink, SinkError

log = structlog.get_logger(__name__)

#: How often a worker looks for outbox entries a dead replica left unqueued.
_CLAIM_EVERY_S = 5.0


class SinkWorker:
    """One sink's delivery: `feed_once()` and `deliver_once()` are the steps the daemon repeats.

    Subjects are delivered concurrently (up to `max_in_flight`), each subject's
    events one after the other; a failed event is tried again on the sink's
    schedule while the events behind it wait, and dead-lettered when the schedule
    runs out.
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        sink: Sink,
        routes: Sequence[Route],
        *,
        consumer: str,
        schedule: Sequence[float] = DEFAULT_SCHEDULE_S,
        max_in_flight: int = 8,
        rate_limit_per_s: float | None = None,
        hide_s: float = 60.0,
        claim_idle_s: float = 60.0,
        batch: int = 200,
        circuit: Circuit | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.redis = redis
        self.sink = sink
        self.routes = routes
        self.consumer = consumer
        self.schedule = tuple(schedule)
        self.max_in_flight = max_in_flight
        self.hide_ms = int(hide_s * 1000)
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.batch = batch
        self.circuit = circuit or Circuit()
        self.bucket = TokenBucket(rate_limit_per_s) if rate_limit_per_s else None
        self.rng = rng or random.Random()
        self.queue = DeliveryQueue(redis, prefix, sink.name)
        self.delivered = 0
        self.failed = 0
        self._claimed_at = float("-inf")

    async def setup(self) -> None:
        """Create the sink's consumer group at the start of the outbox if it is new."""
        try:
            await self.redis.xgroup_create(
                self.queue.outbox, self.queue.group, id="0", mkstream=True
            )
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    # -- outbox -> queue ------------------------------------------------------------------

    async def feed_once(self, block_ms: int | None = None) -> int:
        """Move a batch of outbox entries into the queue (those routed here) or past it."""
        if clock.monotonic() - self._claimed_at >= _CLAIM_EVERY_S:
            # Entries another replica read but never queued (it died in between).
            self._claimed_at = clock.monotonic()
            await self.redis.xautoclaim(
                self.queue.outbox,
                self.queue.group,
                self.consumer,
                self.claim_idle_ms,
                start_id="0-0",
                count=self.batch,
            )
        entries = await self._read("0", None) or await self._read(">", block_ms)
        if not entries:
            return 0
        wanted: list[Queued] = []
        unwanted: list[str] = []
        for entry_id, fields in entries:
            if "event" not in fields:  # trimmed away before it was read: nothing to deliver
                unwanted.append(entry_id)
                continue
            event = json.loads(fields["event"])
            feed, course = fields.get("feed", ""), fields.get("course", "")
            if self.sink.name in sinks_for(self.routes, event, feed=feed, course_id=course):
                wanted.append(Queued(entry_id, fields["subject"], fields["event"], feed, course))
            else:
                unwanted.append(entry_id)
        if wanted:
            await self.queue.enqueue(wanted, _now_ms())
        await self.queue.ack(unwanted)
        return len(entries)

    async def _read(self, start: str, block_ms: int | None) -> list[tuple[str, dict[str, str]]]:
        reply: Any = await self.redis.xreadgroup(
            self.queue.group,
            self.consumer,
            {self.queue.outbox: start},
            count=self.batch,
            block=block_ms,
        )
        if not reply:
            return []
        return [
            (_text(i), {_text(k): _text(v) for k, v in (f or {}).items()}) for i, f in reply[0][1]
        ]

    # -- queue -> sink --------------------------------------------------------------------

    async def deliver_once(self) -> int:
        """Try the due events (one per subject, several subjects at once); returns how many went."""
        if await self.queue.disabled():
            return 0
        now = clock.monotonic()
        if not self.circuit.allows(now):
            return 0
        probing = self.circuit.probing
        try:
            claimed = await self.queue.claim(
                _now_ms(), self.hide_ms, 1 if probing else self.max_in_flight
            )
            if not claimed:
                if probing:
                    self.circuit.abandon_probe()  # nothing to probe with: try again next time
                return 0
            results = await asyncio.gather(*(self._attempt(q) for q in claimed))
        except BaseException:
            if probing and self.circuit.probing:
                self.circuit.abandon_probe()  # an error elsewhere (Redis) is no verdict on the sink
            raise
        sent = [q for q, ok in zip(claimed, results, strict=True) if ok]
        now_ms = _now_ms()
        await self.queue.delivered_many(sent, now_ms)
        self.delivered += len(sent)
        metrics.DELIVERY_ATTEMPTS.labels(self.sink.name, "delivered").inc(len(sent))
        latency = metrics.DELIVERY_LATENCY.labels(self.sink.name)
        for q in sent:
            latency.observe(max(0, now_ms - int(q.id.split("-", 1)[0])) / 1000)
        return len(sent)

    async def _attempt(self, q: Queued) -> bool:
        """Send one event; True when the sink took it (the caller settles it)."""
        if self.bucket is not None:
            await self.bucket.acquire()
        event: dict[str, Any] = json.loads(q.event)
        in_flight = metrics.SINK_IN_FLIGHT.labels(self.sink.name)
        in_flight.inc()
        try:
            await self.sink.send(Delivery(event, q.event, q.feed, q.course_id))
        except SinkError as e:
            await self._failed(q, event, e)
            return False
        finally:
            in_flight.dec()
            metrics.SINK_CIRCUIT_OPEN.labels(self.sink.name).set(int(self.circuit.is_open))
        self.circuit.succeeded()
        log.debug(
            "delivery.sent",
            sink=self.sink.name,
            feed=q.feed,
            id=event.get("id"),
            attempt=q.attempts + 1,
        )
        return True

    async def _failed(self, q: Queued, event: dict[str, Any], error: SinkError) -> None:
        self.failed += 1
        if error.gone:
            metrics.DELIVERY_ATTEMPTS.labels(self.sink.name, "gone").inc()
            metrics.SINK_DISABLED.labels(self.sink.name).set(1)
            reason = f"{error} (at {format_rfc3339(clock.now())})"
            if not await self.queue.disable(reason):
                return
            log.error(
                "sink.disabled",
                sink=self.sink.name,
                reason=str(error),
                hint=f"fix the receiver, then: absorb-bridge replay --sink {self.sink.name}",
            )
            return
        self.circuit.failed(clock.monotonic())
        q.attempts += 1
        q.error = str(error)
        delay = next_delay_s(
            q.attempts, self.schedule, retry_after_s=error.retry_after_s, rng=self.rng
        )
        if delay is None:
            metrics.DELIVERY_ATTEMPTS.labels(self.sink.name, "dead_lettered").inc()
            await self.queue.dead_letter(q, format_rfc3339(clock.now()), _now_ms())
            log.error(
                "delivery.dead_lettered",
                sink=self.sink.name,
                feed=q.feed,
                id=event.get("id"),
                attempts=q.attempts,
                error=str(error),
            )
            return
        metrics.DELIVERY_ATTEMPTS.labels(self.sink.name, "retry").inc()
        await self.queue.retry_at(q, _now_ms() + int(delay * 1000))
        log.warning(
            "delivery.retrying",
            sink=self.sink.name,
            feed=q.feed,
            id=event.get("id"),
            attempt=q.attempts,
            in_s=round(delay, 3),
            error=str(error),
        )

    async def backlog(self) -> dict[str, int]:
        """Outbox entries not yet read, plus the queue's counts."""
        return {
            **await outbox_lag(self.redis, self.queue.outbox, self.queue.group),
            **await self.queue.counts(),
        }


async def outbox_lag(redis: Redis, stream: str, group: str) -> dict[str, int]:
    """Outbox entries a sink has not read yet (`lag`) and read but not queued (`pending`)."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:
        return {"lag": 0, "pending": 0}
    for info in groups:
        if _text(info["name"]) == group:
            return {"lag": int(info.get("lag") or 0), "pending": int(info["pending"])}
    return {"lag": 0, "pending": 0}


def _now_ms() -> int:
    return int(clock.now().timestamp() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
