"""Order per enrollment with a filtered route, two replicas and a replica killed mid-batch.

Real Redis, real http sinks, a receiver that verifies every signature. The
replicas are two delivery workers with their own consumer names on one Redis,
as two `run` processes would be; "killing" one cancels its tasks at a chosen
point and never runs it again, which is what SIGKILL leaves behind in Redis.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge import clock
from bridge.config import HttpSinkConfig
from bridge.delivery import Circuit, SinkWorker
from bridge.routes import Route
from bridge.sinks.base import Delivery
from bridge.sinks.http import HttpSink
from bridge.store import Store
from tests.engine import put_events, sample_events, statuses_by_subject
from tests.receivers import Receiver

FAST = (0, 0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)
#: The route's filter: every status but NotStarted, so the worker routes each entry itself.
WANTED = frozenset({"InProgress", "Complete", "Failed"})


@pytest.fixture
def moved_clock() -> Iterator[None]:
    """Lets a test move the bridge's clock, and puts it back afterwards."""
    yield
    clock.set_offset(0.0)


def _replica(redis: aioredis.Redis, prefix: str, url: str, secret: str, name: str) -> SinkWorker:
    config = HttpSinkConfig.model_validate(
        {"name": "hr", "type": "http", "url": url, "secret": secret, "timeout": "2s"}
    )
    route = Route(sinks=("hr",), statuses=WANTED)
    return SinkWorker(
        redis, prefix, HttpSink(config), [route], consumer=name, schedule=FAST, batch=40,
        circuit=Circuit(threshold=10_000),
    )  # fmt: skip


async def _two_replicas(redis: aioredis.Redis) -> tuple[Receiver, Store, SinkWorker, SinkWorker]:
    """A signing receiver and replicas a and b of one http sink on a fresh prefix, set up."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    receiver = Receiver(secrets=[secret])
    url = await receiver.start()
    prefix = f"order-{secrets.token_hex(3)}"
    a, b = (_replica(redis, prefix, url, secret, name) for name in ("a", "b"))
    for replica in (a, b):
        await replica.setup()
        await replica.sink.start()
    return receiver, Store(redis, prefix), a, b


def _in_order_so_far(received: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> None:
    """Each enrollment's events that arrived are the first of its events, in order."""
    got, want = _order(received), _order(wanted)
    for subject, ids in got.items():
        assert ids == want[subject][: len(ids)], f"{subject}: {ids} is out of order"


def _order(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Per subject, the ids of its events in the order they first appear."""
    firsts: dict[str, dict[str, Any]] = {}
    for event in events:
        firsts.setdefault(str(event["id"]), event)
    return {s: [e["id"] for e in c] for s, c in statuses_by_subject(list(firsts.values())).items()}


async def test_two_replicas_a_filtered_route_and_a_kill_mid_batch_keep_each_enrollments_order(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, moved_clock: None
) -> None:
    """Replica a is paused between reading a batch from the outbox and queueing it while
    replica b feeds; later a is killed mid-batch, with a batch read but not queued and
    events out for delivery. b carries on alone: every wanted event arrives, and each
    enrollment's events arrive in the order they happened."""
    receiver, store, a, b = await _two_replicas(redis)
    events = sample_events(300, subjects=30)  # ten events per enrollment
    await put_events(store, events)
    wanted = [e for e in events if e["status"] in WANTED]
    assert 0 < len(wanted) < len(events)

    # a's route step waits at a gate: a has read its batch and not yet queued it.
    gate, paused = asyncio.Event(), asyncio.Event()
    route_of_a = a.queue.route

    async def held(*args: Any, **kwargs: Any) -> Any:
        paused.set()
        await gate.wait()
        return await route_of_a(*args, **kwargs)

    monkeypatch.setattr(a.queue, "route", held)
    try:
        for _ in range(3):
            gate.clear()
            paused.clear()
            feeding = asyncio.create_task(a.feed_once())
            await asyncio.wait_for(paused.wait(), 10)
            await b.feed_once()  # the other replica feeds while a is between its two steps
            gate.set()
            await feeding
            for _ in range(3):
                await asyncio.gather(a.deliver_once(), b.deliver_once())
        _in_order_so_far(receiver.accepted, wanted)

        # Kill a: a batch read but not queued, and events claimed and out for delivery.
        gate.clear()
        paused.clear()
        out, never = asyncio.Event(), asyncio.Event()

        async def hangs(delivery: Delivery) -> None:
            out.set()
            await never.wait()

        monkeypatch.setattr(a.sink, "send", hangs)
        dying = [asyncio.create_task(a.feed_once()), asyncio.create_task(a.deliver_once())]
        await asyncio.wait_for(asyncio.gather(paused.wait(), out.wait()), 10)
        for task in dying:
            task.cancel()
        await asyncio.gather(*dying, return_exceptions=True)

        # Later than a's feeder lease (5 s) and its claimed events' hiding (60 s) last,
        # within the receiver's five minutes of signature tolerance; b goes on alone.
        clock.set_offset(90.0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        wanted_ids = {e["id"] for e in wanted}
        while not wanted_ids <= set(receiver.ids()):
            assert loop.time() < deadline, (
                f"{len(wanted_ids - set(receiver.ids()))} events never arrived"
            )
            if not await b.feed_once() + await b.deliver_once():
                await asyncio.sleep(0.02)
    finally:
        gate.set()
        await a.sink.close()
        await b.sink.close()
        await receiver.stop()
    assert receiver.problems == []
    assert {e["id"] for e in receiver.accepted} == wanted_ids
    assert _order(receiver.accepted) == _order(wanted)


async def test_a_replica_paused_past_its_lease_queues_nothing_when_it_wakes(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, moved_clock: None
) -> None:
    """Replica a stalls between reading a batch and queueing it for longer than its feeder
    lease; b takes over and queues that batch and the next. When a wakes, its queueing is
    refused, so nothing is queued twice or behind newer events, and a feeds again only
    after b's lease runs out."""
    receiver, store, a, b = await _two_replicas(redis)
    events = sample_events(120, subjects=30)
    await put_events(store, events)
    wanted = [e for e in events if e["status"] in WANTED]
    gate, paused = asyncio.Event(), asyncio.Event()
    route_of_a = a.queue.route
    refused: list[bool] = []

    async def stalls(*args: Any, **kwargs: Any) -> Any:
        paused.set()
        await gate.wait()
        done = await route_of_a(*args, **kwargs)
        refused.append(not done)
        return done

    monkeypatch.setattr(a.queue, "route", stalls)
    try:
        feeding = asyncio.create_task(a.feed_once())
        await asyncio.wait_for(paused.wait(), 10)
        assert await b.feed_once() == 0  # a's lease still holds
        clock.set_offset(6.0)  # a's 5 s lease has run out; b takes over
        assert await b.feed_once() == 40  # what a read and never queued, first
        assert await b.feed_once() == 40
        gate.set()
        assert await feeding == 0
        assert refused == [True]
        assert await a.feed_once() == 0  # b holds the lease now
        queued = await redis.hlen(b.queue.entries)
        assert queued == len([e for e in wanted if int(e["id"], 16) < 80])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(set(receiver.ids())) < len(wanted):
            assert loop.time() < deadline, "delivery did not settle in time"
            moved = await b.feed_once()
            moved += sum(await asyncio.gather(a.deliver_once(), b.deliver_once()))
            if not moved:
                await asyncio.sleep(0.02)
    finally:
        gate.set()
        await a.sink.close()
        await b.sink.close()
        await receiver.stop()
    assert receiver.problems == []
    assert sorted(receiver.ids()) == sorted(e["id"] for e in wanted)  # each once
    assert _order(receiver.accepted) == _order(wanted)
