"""What Redis keeps stays bounded: groups of removed sinks, quarantine and dead letters.

Real Redis, real delivery workers and an http sink against a receiver that
verifies signatures; time moves through `bridge.clock`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from structlog.testing import capture_logs

from bridge import clock, keys
from bridge.commands.status import status
from bridge.config import HttpSinkConfig
from bridge.delivery import Circuit, SinkWorker
from bridge.metrics import REGISTRY
from bridge.routes import Route
from bridge.sinks.http import HttpSink
from bridge.store import Commit, Store
from tests.engine import LEASE_MS, put_events, sample_events
from tests.receivers import Receiver

DAY_S = 86400.0


@pytest.fixture
def moved_clock() -> Iterator[None]:
    """Lets a test move the bridge's clock, and puts it back afterwards."""
    yield
    clock.set_offset(0.0)


class Taking:
    """A sink that takes every event."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.taken = 0

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def send(self, delivery: Any) -> None:
        """Take the event."""
        self.taken += 1


def _counted(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"absorb_bridge_{metric}_total", labels) or 0.0


async def _drain(worker: SinkWorker) -> None:
    while await worker.feed_once() + await worker.deliver_once():
        pass


async def test_a_removed_sinks_group_is_warned_about_then_dropped_and_trimming_resumes(
    redis: aioredis.Redis, moved_clock: None
) -> None:
    """A sink that left the config holds the outbox for the grace period (with one warning
    per period, not one per trim), then its group is dropped and counted, and the outbox
    trims down to what the remaining sink still needs. A configured sink is never dropped."""
    store = Store(redis, f"growth-{secrets.token_hex(3)}", removed_sink_grace_s=7 * DAY_S)
    gone = f"gone{secrets.token_hex(2)}"
    stays, leaves, idle = Taking("stays"), Taking(gone), Taking("idle")
    workers = [
        SinkWorker(redis, store.prefix, sink, [Route(sinks=(sink.name,))], consumer="r1")
        for sink in (stays, leaves, idle)
    ]
    for worker in workers:
        await worker.setup()
    await put_events(store, sample_events(20))
    for worker in workers[:2]:
        await _drain(worker)
    # From here on only `stays` is configured: `gone` is never fed again.
    await put_events(store, sample_events(30))
    await _drain(workers[0])
    before = _counted("stale_sink_groups_dropped", sink=gone)

    clock.set_offset(6 * DAY_S)
    await _drain(workers[0])
    with capture_logs() as logs:
        assert await store.trim_outbox(keep=["stays", "idle"]) == 0  # `idle` read nothing
        assert await store.trim_outbox(keep=["stays", "idle"]) == 0
    warned = [e for e in logs if e["event"] == "outbox.sink_group_unfed"]
    assert [e["sink"] for e in warned] == [gone]
    assert 0 < warned[0]["dropped_in_s"] <= DAY_S

    clock.set_offset(7 * DAY_S + 3600)
    await _drain(workers[0])
    with capture_logs() as logs:
        # `idle`, unfed as long but configured, stays and still holds everything.
        assert await store.trim_outbox(keep=["stays", "idle"]) == 0
    assert [e["sink"] for e in logs if e["event"] == "outbox.sink_group_dropped"] == [gone]
    groups = [g["name"].decode() for g in await redis.xinfo_groups(keys.outbox(store.prefix))]
    assert sorted(groups) == ["sink:idle", "sink:stays"]
    await _drain(workers[2])
    assert await store.trim_outbox(keep=["stays", "idle"]) == 50
    assert _counted("stale_sink_groups_dropped", sink=gone) == before + 1
    assert (await store.dropped_counts())["sink_groups"] == 1
    assert await store.outbox_length() == 0
    assert stays.taken == 50
    assert idle.taken == 50

    # Later events are trimmed as soon as every remaining sink has read them.
    await put_events(store, sample_events(5))
    await _drain(workers[0])
    await _drain(workers[2])
    assert await store.trim_outbox(keep=["stays", "idle"]) == 5


async def test_a_group_never_seen_fed_gets_its_whole_grace_period_from_now(
    redis: aioredis.Redis, moved_clock: None
) -> None:
    """A group made before the bridge noted when sinks were fed is not dropped at once:
    its grace period starts at the first trim that finds it."""
    store = Store(redis, f"growth-{secrets.token_hex(3)}", removed_sink_grace_s=DAY_S)
    await put_events(store, sample_events(3))
    outbox = keys.outbox(store.prefix)
    await redis.xgroup_create(outbox, keys.sink_group("legacy"), id="0")
    assert await store.trim_outbox() == 0
    clock.set_offset(DAY_S - 60)
    assert await store.trim_outbox() == 0
    assert len(await redis.xinfo_groups(outbox)) == 1
    clock.set_offset(DAY_S + 60)
    assert await store.trim_outbox() == 0  # the group is gone, and with it every floor
    assert await redis.xinfo_groups(outbox) == []


async def _quarantine(store: Store, feed: str, entries: dict[str, str]) -> None:
    token = await store.acquire(feed, "q", LEASE_MS)
    assert token is not None
    await store.commit(feed, "q", token, Commit(quarantine=entries))


async def test_quarantine_keeps_its_cap_by_dropping_the_longest_quarantined(
    redis: aioredis.Redis, moved_clock: None
) -> None:
    """Past `max_quarantined`, the records quarantined longest ago are dropped (a record
    quarantined again counts as new) and counted; records cleared leave the order too."""
    store = Store(redis, f"growth-{secrets.token_hex(3)}", max_quarantined=3)
    feed = f"q{secrets.token_hex(2)}"
    before = _counted("quarantine_dropped", feed=feed)
    # Quarantined by an earlier version, with no order kept: the oldest of all.
    await redis.hset(keys.quarantine(store.prefix, feed), "r0", json.dumps({"error": "old"}))
    for n in range(1, 4):
        clock.set_offset(n)
        await _quarantine(store, feed, {f"r{n}": json.dumps({"error": f"bad {n}"})})
    assert sorted(await store.quarantined(feed)) == ["r1", "r2", "r3"]
    clock.set_offset(4)
    await _quarantine(store, feed, {"r1": json.dumps({"error": "still bad"})})
    clock.set_offset(5)
    await _quarantine(store, feed, {"r4": json.dumps({"error": "bad 4"})})
    assert sorted(await store.quarantined(feed)) == ["r1", "r3", "r4"]
    clock.set_offset(6)
    await _quarantine(store, feed, {"r3": ""})  # read fine again: leaves quarantine
    await _quarantine(store, feed, {"r5": json.dumps({"error": "bad 5"})})
    assert sorted(await store.quarantined(feed)) == ["r1", "r4", "r5"]
    assert _counted("quarantine_dropped", feed=feed) == before + 2
    assert (await store.dropped_counts())[f"quarantine:{feed}"] == 2
    order = await redis.zrange(keys.quarantine_order(store.prefix, feed), 0, -1)
    assert sorted(order) == [b"r1", b"r4", b"r5"]


async def test_dead_letters_keep_their_cap_by_dropping_the_oldest(
    redis: aioredis.Redis, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sink whose receiver refuses everything keeps only its newest `max_dead_letters`
    dead letters; the older ones are dropped and counted, in status and in a metric."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()

    async def refuse(_n: int, _request: web.Request) -> int:
        return 500

    receiver = Receiver(secrets=[secret], behaviour=refuse)
    url = await receiver.start()
    name = f"capped{secrets.token_hex(2)}"
    config = HttpSinkConfig.model_validate(
        {"name": name, "type": "http", "url": url, "secret": secret, "timeout": "2s"}
    )
    sink = HttpSink(config)
    store = Store(redis, f"growth-{secrets.token_hex(3)}")
    worker = SinkWorker(
        redis, store.prefix, sink, [Route(sinks=(name,))], consumer="r1", schedule=(0,),
        max_dead_letters=3, circuit=Circuit(threshold=10_000),
    )  # fmt: skip
    await worker.setup()
    await sink.start()
    before = _counted("dead_letters_dropped", sink=name)
    events = sample_events(8, subjects=8)
    try:
        await put_events(store, events)
        await _drain(worker)
    finally:
        await sink.close()
        await receiver.stop()
    assert receiver.requests == 8
    assert receiver.problems == []
    kept = [json.loads(d.queued.event)["id"] for d in await worker.queue.dead_letters()]
    assert kept == [e["id"] for e in events[-3:]]
    counts = await worker.queue.counts()
    assert (counts["dead_lettered"], counts["dead_letters_dropped"]) == (3, 5)
    assert _counted("dead_letters_dropped", sink=name) == before + 5
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"""
absorb: {{base_url: "http://127.0.0.1:9", api_key: k, username: u, password: p}}
redis: {{url: "{redis_url}", prefix: {store.prefix}}}
feeds: [{{name: courses, resource: course_enrollments}}]
sinks: [{{name: {name}, type: http, url: "{url}", secret: "{secret}", max_dead_letters: 3}}]
routes: [{{sinks: [{name}]}}]
"""
    )
    capsys.readouterr()  # what the delivery logged so far
    assert await asyncio.to_thread(status, str(config), as_json=True) == 0
    shown = json.loads(capsys.readouterr().out)["sinks"][0]
    assert (shown["dead_lettered"], shown["dead_letters_dropped"]) == (3, 5)
