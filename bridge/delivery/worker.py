"""Delivering to one sink: feed its queue from the outbox, then try what is due."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bridge import clock, metrics
from bridge.absorb.timefmt import format_rfc3339
from bridge.delivery.policy import DEFAULT_SCHEDULE_S, Circuit, next_delay_s
from bridge.delivery.queue import DeliveryQueue, OutboxEntry, Queued
from bridge.events import encode
from bridge.personal_data import PersonalData, scrub
from bridge.ratelimit import RateLimiter
from bridge.routes import Route, sinks_for
from bridge.sinks.base import BatchSink, Delivery, Sink, SinkError

log = structlog.get_logger(__name__)

#: Events a sink that takes batches is handed at a time.
MAX_BATCH = 500


class SinkWorker:
    """One sink's delivery: `feed_once()` and `deliver_once()` are the steps the daemon repeats.

    Subjects are delivered concurrently (up to `max_in_flight` at once, shared by
    the lanes; a sink that takes batches gets up to `max_batch` at a time per lane),
    each subject's events one after the other; a failed event is tried again on the
    sink's schedule while the events behind it wait, and dead-lettered when the
    schedule runs out.
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
        max_batch: int = MAX_BATCH,
        rate_limit_per_s: float | None = None,
        hide_s: float = 60.0,
        feed_lease_s: float = 5.0,
        batch: int = 1000,
        max_dead_letters: int | None = None,
        circuit: Circuit | None = None,
        rng: random.Random | None = None,
        personal_data: PersonalData | None = None,
    ) -> None:
        self.redis = redis
        self.personal_data = personal_data or PersonalData()
        self.sink = sink
        self.routes = routes
        self.consumer = consumer
        self.schedule = tuple(schedule)
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self.hide_ms = int(hide_s * 1000)
        self.feed_lease_ms = int(feed_lease_s * 1000)
        self.batch = batch
        self.circuit = circuit or Circuit()
        self.bucket = RateLimiter(rate_limit_per_s) if rate_limit_per_s else None
        self.rng = rng or random.Random()
        self.queue = DeliveryQueue(redis, prefix, sink.name, max_dead_letters=max_dead_letters)
        self.delivered = 0
        self.failed = 0
        #: The feeder lease's token while this replica feeds the sink.
        self._feeding: str | None = None
        #: Events claimed and not yet settled, over all lanes (per-event sinks).
        self._sending = 0
        # A paced sink takes its events one by one, each when the rate limit lets it.
        self._batches = sink if isinstance(sink, BatchSink) and self.bucket is None else None
        self._takes_all = _takes_everything(routes, sink.name)
        # Labelled once: looking the children up again per event shows in profiles.
        self._delivered_total = metrics.DELIVERY_ATTEMPTS.labels(sink.name, "delivered")
        self._latency = metrics.DELIVERY_LATENCY.labels(sink.name)
        self._in_flight = metrics.SINK_IN_FLIGHT.labels(sink.name)
        self._circuit_open = metrics.SINK_CIRCUIT_OPEN.labels(sink.name)

    async def setup(self) -> None:
        """Create the sink's consumer group at the start of the outbox if it is new, and note
        the sink as fed now (a group nobody feeds for long is dropped: `Store.trim_outbox`)."""
        try:
            await self.redis.xgroup_create(
                self.queue.outbox, self.queue.group, id="0", mkstream=True
            )
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        await self.redis.hset(self.queue.seen, self.queue.group, _now_ms())

    @property
    def lanes(self) -> int:
        """How many `deliver_once` the daemon runs at once: two, so that one lane claims
        and settles in Redis while the other's events are out (one if `max_in_flight` is 1)."""
        return 2 if self._batches is not None or self.max_in_flight > 1 else 1

    async def step(self) -> bool:
        """Feed and deliver once, at the same time; whether anything moved (for draining)."""
        # Claiming goes first: Redis answers it before it runs the feed's longer script,
        # which then overlaps with the sending.
        sent, fed = await asyncio.gather(
            self.deliver_once(), self.feed_once(), return_exceptions=True
        )
        for outcome in (sent, fed):
            if isinstance(outcome, BaseException):
                raise outcome
        return bool(fed or sent)

    # -- outbox -> queue ------------------------------------------------------------------

    async def feed_once(self) -> int:
        """Move a batch of outbox entries into the queue (those routed here) or past it.

        Only the replica holding the sink's feeder lease feeds; the others read
        nothing (0) until it stops renewing the lease. Routing happens here, between
        the read and the queueing; a replica that loses the lease in between queues
        nothing, and its successor reads those entries again before newer ones.
        """
        fed = await self.queue.feed(
            self.consumer, self.batch, _now_ms(), self.feed_lease_ms, take_all=self._takes_all
        )
        if fed.token != self._feeding:
            log.info("delivery.feeder", sink=self.sink.name, feeding=fed.token is not None)
            self._feeding = fed.token
        if fed.token is None or not fed.entries:
            return fed.read
        wanted: list[str] = []
        unwanted: list[str] = []
        for entry in fed.entries:
            (wanted if self._routed_here(entry) else unwanted).append(entry.id)
        if not await self.queue.route(fed.token, wanted, unwanted, _now_ms()):
            log.warning("delivery.feeder_lost", sink=self.sink.name, entries=len(fed.entries))
            self._feeding = None
            return 0
        return fed.read

    def _routed_here(self, entry: OutboxEntry) -> bool:
        """Whether an entry goes to this sink; one whose event cannot be read is queued, so
        it ends in the dead letters with its error rather than stopping the feed."""
        if not entry.event:
            return False
        try:
            event = _load(entry.event)
            return self.sink.name in sinks_for(
                self.routes, event, feed=entry.feed, course_id=entry.course_id
            )
        except Exception as e:  # hostile data must not stop the feed: keep it visible instead
            log.error("delivery.unroutable", sink=self.sink.name, entry=entry.id, error=repr(e))
            return True

    async def release(self) -> None:
        """Let another replica feed the sink at once (on a clean stop)."""
        if self._feeding is not None:
            await self.queue.release(self._feeding)
            self._feeding = None

    # -- queue -> sink --------------------------------------------------------------------

    async def deliver_once(self) -> int:
        """Try the due events (one per subject, several subjects at once); returns how many went.

        Calls may overlap (see `lanes`): each claims different events.
        """
        if not self.circuit.allows(clock.monotonic()):
            return 0
        probing = self.circuit.probing
        if self._batches is not None:
            count = 1 if probing else self.max_batch
        else:
            # A lane takes its share of max_in_flight, and never more than is left.
            share = -(-self.max_in_flight // self.lanes)
            count = 1 if probing else min(share, self.max_in_flight - self._sending)
        if count <= 0:
            return 0
        self._sending += count
        try:
            return await self._deliver(count, probing)
        finally:
            self._sending -= count

    async def _deliver(self, count: int, probing: bool) -> int:
        try:
            claimed = await self.queue.claim(_now_ms(), self.hide_ms, count)
            if not claimed:
                if probing:
                    self.circuit.abandon_probe()  # nothing to probe with: try again next time
                return 0
            prepared = [self._prepare(q) for q in claimed]
            deliveries = [d for d in prepared if isinstance(d, Delivery)]
            self._in_flight.inc(len(deliveries))
            try:
                sent_outcomes = iter(await self._send(deliveries))
            finally:
                self._in_flight.dec(len(deliveries))
        except BaseException:
            if probing and self.circuit.probing:
                self.circuit.abandon_probe()  # an error elsewhere (Redis) is no verdict on the sink
            raise
        sent: list[Queued] = []
        for q, ready in zip(claimed, prepared, strict=True):
            error = next(sent_outcomes) if isinstance(ready, Delivery) else ready
            if error is None:
                self.circuit.succeeded()
                sent.append(q)
            else:
                await self._failed(q, error)
        self._circuit_open.set(int(self.circuit.is_open))
        now_ms = _now_ms()
        await self.queue.delivered_many(sent, now_ms)
        self.delivered += len(sent)
        self._delivered_total.inc(len(sent))
        for q in sent:
            self._latency.observe(max(0, now_ms - int(q.id.split("-", 1)[0])) / 1000)
        if sent:
            log.debug("delivery.sent", sink=self.sink.name, events=len(sent))
        return len(sent)

    def _prepare(self, q: Queued) -> Delivery | SinkError:
        """The delivery of a queued event, or the error that makes it a failed try."""
        try:
            event = _load(q.event)
        except ValueError as e:  # a queued event that is not JSON fails alone, on the schedule
            return SinkError(self.sink.name, f"the queued event is not JSON: {e}")
        if not self.personal_data:
            return Delivery(event, q.event, q.feed, q.course_id)
        event = scrub(event, self.personal_data)
        return Delivery(event, encode(event).decode(), q.feed, q.course_id)

    async def _send(self, deliveries: list[Delivery]) -> list[SinkError | None]:
        """One outcome per delivery: in one batch when the sink takes batches, else concurrently.

        Whatever the sink raises is that delivery's failed try (the whole batch's, for
        a batch): a bug or a template error must not end the sink's loop.
        """
        if not deliveries:
            return []
        if self._batches is None:
            return await asyncio.gather(*(self._send_one(d) for d in deliveries))
        try:
            outcomes = list(await self._batches.send_many(deliveries))
        except Exception as e:
            return [self._as_failure(e)] * len(deliveries)
        if len(outcomes) != len(deliveries):
            wrong = f"send_many gave {len(outcomes)} outcomes for {len(deliveries)} events"
            return [self._as_failure(RuntimeError(wrong))] * len(deliveries)
        return outcomes

    async def _send_one(self, delivery: Delivery) -> SinkError | None:
        if self.bucket is not None:
            await self.bucket.acquire()
        try:
            await self.sink.send(delivery)
        except Exception as e:
            return self._as_failure(e)
        return None

    def _as_failure(self, error: Exception) -> SinkError:
        """A SinkError as it is; anything else raised by a sink as a failed try naming it."""
        if isinstance(error, SinkError):
            return error
        metrics.SINK_EXCEPTIONS.labels(self.sink.name, type(error).__name__).inc()
        return SinkError(self.sink.name, f"raised {type(error).__name__}: {error}")

    async def _failed(self, q: Queued, error: SinkError) -> None:
        self.failed += 1
        event_id = _event_id(q)
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
        if not error.permanent:
            self.circuit.failed(clock.monotonic())
        elif self.circuit.probing:  # the event's fault is no verdict on the receiver
            self.circuit.abandon_probe()
        q.attempts += 1
        q.error = str(error)
        delay = (
            None
            if error.permanent
            else next_delay_s(
                q.attempts, self.schedule, retry_after_s=error.retry_after_s, rng=self.rng
            )
        )
        if delay is None:
            metrics.DELIVERY_ATTEMPTS.labels(self.sink.name, "dead_lettered").inc()
            _, dropped = await self.queue.dead_letter(q, format_rfc3339(clock.now()), _now_ms())
            log.error(
                "delivery.dead_lettered",
                sink=self.sink.name,
                feed=q.feed,
                id=event_id,
                attempts=q.attempts,
                error=str(error),
            )
            if dropped:
                metrics.DEAD_LETTERS_DROPPED.labels(self.sink.name).inc(dropped)
                log.warning(
                    "delivery.dead_letters_dropped",
                    sink=self.sink.name,
                    dropped=dropped,
                    max_dead_letters=self.queue.max_dead_letters,
                )
            return
        metrics.DELIVERY_ATTEMPTS.labels(self.sink.name, "retry").inc()
        await self.queue.retry_at(q, _now_ms() + int(delay * 1000))
        log.warning(
            "delivery.retrying",
            sink=self.sink.name,
            feed=q.feed,
            id=event_id,
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


def _event_id(q: Queued) -> str | None:
    """The CloudEvent id of a queued event, for logs (None when it cannot be read)."""
    try:
        return str(_load(q.event).get("id"))
    except (ValueError, AttributeError):
        return None


def _load(text: str) -> dict[str, Any]:
    """A CloudEvent from its JSON text."""
    try:
        event: dict[str, Any] = orjson.loads(text)
    except orjson.JSONDecodeError:  # orjson refuses integers beyond 64 bits: ask the stdlib
        event = json.loads(text)
    return event


def _takes_everything(routes: Sequence[Route], sink: str) -> bool:
    """Whether a route without filters names the sink: then no event needs routing."""
    return any(
        sink in route.sinks
        and all(getattr(route, f.name) is None for f in fields(route) if f.name != "sinks")
        for route in routes
    )
