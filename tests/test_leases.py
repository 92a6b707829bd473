"""Leases and fencing on a real Redis: one sweeper per scope, and a lost lease writes nothing."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from bridge.store import Commit, Fenced, OutboxEvent, Store

FEED, SCOPE = "courses", "course:1"


def _event() -> OutboxEvent:
    return OutboxEvent(id="e1", subject="s", type="t", feed=FEED, course_id="", json="{}")


async def test_only_one_replica_holds_a_scope(redis: aioredis.Redis) -> None:
    """While one replica holds the lease, another cannot take it; the holder can again."""
    a, b = Store(redis, "leases"), Store(redis, "leases")
    token = await a.acquire(FEED, SCOPE, 10_000)
    assert token is not None
    assert await b.acquire(FEED, SCOPE, 10_000) is None
    assert await a.acquire(FEED, SCOPE, 10_000) == token


async def test_a_dead_replicas_lease_is_taken_over_after_its_ttl(redis: aioredis.Redis) -> None:
    """A replica that dies without releasing holds the scope for one TTL at most."""
    a, b = Store(redis, "leases"), Store(redis, "leases")
    first = await a.acquire(FEED, SCOPE, 300)
    assert await b.acquire(FEED, SCOPE, 300) is None
    await asyncio.sleep(0.4)
    second = await b.acquire(FEED, SCOPE, 300)
    assert second is not None
    assert first is not None
    assert int(second.rsplit("/", 1)[1]) > int(first.rsplit("/", 1)[1])


async def test_release_hands_the_scope_over_at_once(redis: aioredis.Redis) -> None:
    """A released lease can be taken straight away; renewing a lost one says so."""
    a, b = Store(redis, "leases"), Store(redis, "leases")
    token = await a.acquire(FEED, SCOPE, 10_000)
    assert token is not None
    assert await a.renew(FEED, SCOPE, token, 10_000)
    await a.release(FEED, SCOPE, token)
    assert await b.acquire(FEED, SCOPE, 10_000) is not None
    assert not await a.renew(FEED, SCOPE, token, 10_000)


async def test_a_replica_that_lost_its_lease_cannot_write(redis: aioredis.Redis) -> None:
    """Fencing: a commit under a lease another replica has since taken writes nothing."""
    a, b = Store(redis, "leases"), Store(redis, "leases")
    stale = await a.acquire(FEED, SCOPE, 200)
    assert stale is not None
    await asyncio.sleep(0.3)
    fresh = await b.acquire(FEED, SCOPE, 10_000)
    assert fresh is not None
    with pytest.raises(Fenced):
        await a.commit(FEED, SCOPE, stale, Commit(events=[_event()], watermark_us=123))
    assert await a.outbox_length() == 0
    assert "watermark" not in await a.scope_state(FEED, SCOPE)
    await b.commit(FEED, SCOPE, fresh, Commit(events=[_event()], watermark_us=123))
    assert await b.outbox_length() == 1
    assert (await b.scope_state(FEED, SCOPE))["watermark"] == "123"


async def test_the_watermark_never_moves_back(redis: aioredis.Redis) -> None:
    """A commit with an older watermark (an overlap page) leaves the newer one in place."""
    store = Store(redis, "leases")
    token = await store.acquire(FEED, SCOPE, 10_000)
    assert token is not None
    await store.commit(FEED, SCOPE, token, Commit(watermark_us=2_000))
    await store.commit(FEED, SCOPE, token, Commit(watermark_us=1_000))
    assert (await store.scope_state(FEED, SCOPE))["watermark"] == "2000"


async def test_the_outbox_keeps_what_any_sink_still_needs(redis: aioredis.Redis) -> None:
    """Trimming drops only entries every sink's group has read and acknowledged."""
    store = Store(redis, "trim")
    token = await store.acquire(FEED, SCOPE, 10_000)
    assert token is not None
    events = [
        OutboxEvent(id=f"e{n}", subject="s", type="t", feed=FEED, course_id="", json="{}")
        for n in range(5)
    ]
    await store.commit(FEED, SCOPE, token, Commit(events=events))
    stream = "trim:outbox"
    for group in ("sink:a", "sink:b"):
        await redis.xgroup_create(stream, group, id="0")
    read = await redis.xreadgroup("sink:a", "c", {stream: ">"}, count=5)
    ids = [entry_id for entry_id, _ in read[0][1]]
    await redis.xack(stream, "sink:a", *ids)
    assert await store.trim_outbox() == 0  # sink b has read nothing yet
    read = await redis.xreadgroup("sink:b", "c", {stream: ">"}, count=3)
    await redis.xack(stream, "sink:b", *[entry_id for entry_id, _ in read[0][1]][:2])
    assert await store.trim_outbox() == 2  # the third is read by b but not acknowledged
    assert await store.outbox_length() == 3
