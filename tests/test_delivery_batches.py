"""Sinks that take batches, routing filters, the queue's stored form and what sinks raise,
on a real Redis."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from bridge.delivery import Circuit, Queued, SinkWorker
from bridge.routes import Route
from bridge.sinks.base import BatchSink, Delivery, SinkError
from bridge.store import Store
from tests.engine import put_events, sample_events, settle_worker, sink_worker, statuses_by_subject

FAST = (0,) + (0.05,) * 20


class Recorder:
    """A batch sink that remembers each batch and refuses the events it is told to, once each."""

    def __init__(self, refuse_once: Sequence[str] = ()) -> None:
        self.name = "batch"
        self.batches: list[list[str]] = []
        self.taken: list[dict[str, Any]] = []
        self.refuse = set(refuse_once)

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def send(self, delivery: Delivery) -> None:
        """Take one event (the worker never calls it for a batch sink)."""
        raise AssertionError("a batch sink is sent batches")

    async def send_many(self, deliveries: Sequence[Delivery]) -> list[SinkError | None]:
        """Take the batch, refusing the marked events the first time they come."""
        self.batches.append([d.id for d in deliveries])
        outcomes: list[SinkError | None] = []
        for delivery in deliveries:
            if delivery.id in self.refuse:
                self.refuse.discard(delivery.id)
                outcomes.append(SinkError(self.name, "refused once"))
            else:
                self.taken.append(delivery.event)
                outcomes.append(None)
        return outcomes


def _ids_by_subject(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {s: [e["id"] for e in chain] for s, chain in statuses_by_subject(events).items()}


async def test_a_batch_sink_gets_hundreds_at_a_time_one_per_subject(
    redis: aioredis.Redis,
) -> None:
    """A batch sink is handed up to max_batch events at once (more than max_in_flight), never
    two of one subject in a batch, and gets every event once in order per subject."""
    sink = Recorder()
    assert isinstance(sink, BatchSink)
    worker, store = await sink_worker(
        redis, sink, "batch", schedule=FAST, max_in_flight=4, max_batch=300
    )
    events = sample_events(1200, subjects=400)
    await put_events(store, events)
    await settle_worker(worker, lambda: worker.delivered == 1200)
    assert max(len(b) for b in sink.batches) == 300
    for batch in sink.batches:
        subjects = [e["subject"] for e in events if e["id"] in set(batch)]
        assert len(subjects) == len(set(subjects))
    assert _ids_by_subject(sink.taken) == _ids_by_subject(events)


async def test_one_refused_event_of_a_batch_is_retried_alone_and_its_subject_waits(
    redis: aioredis.Redis,
) -> None:
    """The others of the batch are delivered; only the refused event is tried again, and the
    events of its subject wait behind it, so that subject still arrives in order."""
    events = sample_events(30, subjects=10)
    refused = events[3]["id"]  # the first event of its subject
    sink = Recorder(refuse_once=[refused])
    worker, store = await sink_worker(redis, sink, "batch", schedule=FAST)
    await put_events(store, events)
    await settle_worker(worker, lambda: worker.delivered == 30)
    assert worker.failed == 1
    assert sum(batch.count(refused) for batch in sink.batches) == 2
    assert [e["id"] for e in sink.taken].count(refused) == 1
    first = sink.batches[0]
    assert len(first) == 10
    assert refused in first
    assert _ids_by_subject(sink.taken) == _ids_by_subject(events)
    counts = await worker.queue.counts()
    assert counts == {"queued": 0, "retrying": 0, "dead_lettered": 0, "dead_letters_dropped": 0}


async def test_routes_with_filters_queue_what_they_match_and_acknowledge_the_rest(
    redis: aioredis.Redis,
) -> None:
    """With a status filter the worker routes each entry itself: matching events are
    delivered, the others acknowledged, and nothing stays pending in the outbox group."""
    sink = Recorder()
    store = Store(redis, f"routes-{secrets.token_hex(3)}")
    route = Route(sinks=("batch",), statuses=frozenset({"Complete"}))
    worker = SinkWorker(
        redis, store.prefix, sink, [route], consumer="test", schedule=FAST,
        circuit=Circuit(threshold=10_000),
    )  # fmt: skip
    await worker.setup()
    events = sample_events(40, subjects=8)
    await put_events(store, events)
    wanted = [e for e in events if e["status"] == "Complete"]
    assert 0 < len(wanted) < len(events)
    await settle_worker(worker, lambda: worker.delivered == len(wanted))
    while await worker.feed_once():
        pass
    assert sorted(e["id"] for e in sink.taken) == sorted(e["id"] for e in wanted)
    pending: Any = await redis.xpending(worker.queue.outbox, worker.queue.group)
    assert pending["pending"] == 0


def test_a_queued_event_keeps_its_json_text_and_old_payloads_still_load() -> None:
    """The stored form keeps the event's text as it came (a pretty-printed one too); a
    payload written by an earlier version (one JSON document) loads the same."""
    text = json.dumps(sample_events(1)[0], indent=2)
    queued = Queued("1-0", "s", text, "f", "c", attempts=2, error="boom")
    assert Queued.load("1-0", queued.payload()) == queued
    assert Queued.load("1-0", queued.payload().encode()) == queued
    old = json.dumps({k: v for k, v in queued.__dict__.items() if k != "id"})
    assert Queued.load("1-0", old) == queued


async def test_two_lanes_of_a_batch_sink_never_share_an_event_or_a_subject(
    redis: aioredis.Redis,
) -> None:
    """A batch sink is delivered to by two overlapping lanes (as the daemon runs it): each
    event is taken once and each subject's events still arrive in order."""
    sink = Recorder()
    worker, store = await sink_worker(redis, sink, "lanes", schedule=FAST, max_batch=50)
    assert worker.lanes == 2
    events = sample_events(600, subjects=120)
    await put_events(store, events)
    for _ in range(200):
        if worker.delivered == len(events):
            break
        await asyncio.gather(worker.feed_once(), worker.deliver_once(), worker.deliver_once())
    assert worker.delivered == len(events)
    assert sorted(e["id"] for e in sink.taken) == sorted(e["id"] for e in events)
    assert _ids_by_subject(sink.taken) == _ids_by_subject(events)


class Counting:
    """A per-event sink that counts the sends under way at once."""

    def __init__(self) -> None:
        self.name = "counted"
        self.under_way = 0
        self.most = 0
        self.taken: list[dict[str, Any]] = []

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def send(self, delivery: Delivery) -> None:
        """Take one event, yielding once so that other sends overlap it."""
        self.under_way += 1
        self.most = max(self.most, self.under_way)
        await asyncio.sleep(0)
        self.taken.append(delivery.event)
        self.under_way -= 1


async def test_two_lanes_of_a_per_event_sink_share_max_in_flight(redis: aioredis.Redis) -> None:
    """Two overlapping lanes never have more than max_in_flight sends under way together,
    and each subject's events still arrive in order."""
    sink = Counting()
    worker, store = await sink_worker(redis, sink, "shared", schedule=FAST, max_in_flight=5)
    assert worker.lanes == 2
    events = sample_events(200, subjects=40)
    await put_events(store, events)
    for _ in range(500):
        if worker.delivered == len(events):
            break
        await asyncio.gather(worker.feed_once(), worker.deliver_once(), worker.deliver_once())
    assert worker.delivered == len(events)
    assert 1 < sink.most <= 5
    assert _ids_by_subject(sink.taken) == _ids_by_subject(events)


class Raising:
    """A per-event sink with a bug: TypeError for some events once, for one event always."""

    def __init__(self, once: set[str], always: str) -> None:
        self.name = "buggy"
        self.once = set(once)
        self.always = always
        self.taken: list[dict[str, Any]] = []

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def send(self, delivery: Delivery) -> None:
        """Take the event, unless the bug strikes (a template fed the wrong type, say)."""
        if delivery.id == self.always or delivery.id in self.once:
            self.once.discard(delivery.id)
            raise TypeError(f"can only concatenate str (not int) to str in {delivery.id}")
        self.taken.append(delivery.event)


async def test_exceptions_from_a_sink_are_failed_tries_and_never_stop_it(
    redis: aioredis.Redis,
) -> None:
    """A TypeError from a sink is a failed try with its text, on the retry schedule: the
    events it struck once arrive on their next try, the one it always strikes becomes a
    dead letter naming the error, its subject then moves on, and the worker keeps going."""
    events = sample_events(40, subjects=8)
    once = {events[0]["id"], events[9]["id"], events[17]["id"]}
    always = events[2]["id"]  # the first event of its subject: the rest wait, then go
    sink = Raising(once, always)
    worker, store = await sink_worker(redis, sink, "raising", schedule=(0, 0.01, 0.01))
    await put_events(store, events)
    await settle_worker(worker, lambda: worker.delivered == 39)
    assert worker.failed == 3 + 3  # three struck once; the last one on each of its three tries
    letters = await worker.queue.dead_letters()
    assert [json.loads(d.queued.event)["id"] for d in letters] == [always]
    assert letters[0].queued.attempts == 3
    assert "TypeError" in str(letters[0].queued.error)
    assert f"to str in {always}" in str(letters[0].queued.error)
    others = [e for e in events if e["id"] != always]
    assert _ids_by_subject(sink.taken) == _ids_by_subject(others)
    assert (await worker.queue.counts())["queued"] == 0


class RaisingBatches(Recorder):
    """A batch sink whose first batch raises instead of answering per event."""

    async def send_many(self, deliveries: Sequence[Delivery]) -> list[SinkError | None]:
        """Raise on the first batch (a bug), take the later ones."""
        if not self.batches:
            self.batches.append([d.id for d in deliveries])
            raise KeyError("status")
        return await super().send_many(deliveries)


async def test_an_exception_from_a_batch_sink_is_a_failed_try_of_the_whole_batch(
    redis: aioredis.Redis,
) -> None:
    """Every event of the batch that raised counts one failed try (with the error) and
    comes again on the schedule; then everything arrives once, in order per subject."""
    sink = RaisingBatches()
    worker, store = await sink_worker(redis, sink, "raising-batch", schedule=(0, 0.01, 0.01))
    events = sample_events(30, subjects=10)
    await put_events(store, events)
    assert await worker.feed_once() == 30
    assert await worker.deliver_once() == 0
    assert worker.failed == 10
    assert len(sink.batches) == 1
    counts = await worker.queue.counts()
    assert counts["retrying"] == 10
    payloads = await redis.hvals(worker.queue.entries)
    errors = {Queued.load("", p).error for p in payloads if Queued.load("", p).attempts}
    assert errors == {"sink batch: raised KeyError: 'status'"}
    await settle_worker(worker, lambda: worker.delivered == 30)
    assert _ids_by_subject(sink.taken) == _ids_by_subject(events)
    assert await worker.queue.dead_letters() == []
