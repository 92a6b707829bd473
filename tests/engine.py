"""Helpers for engine tests: a sweeper wired to the simulator and a real Redis."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from bridge.absorb.client import AbsorbClient
from bridge.feeds import FeedSpec, Scope, course_scope
from bridge.store import Store
from bridge.sweep import Sweeper, SweepResult
from tests.conftest import SimHandle

LEASE_MS = 30_000


@dataclass
class Engine:
    """A sweeper, its store and the simulator it sweeps."""

    sim: SimHandle
    client: AbsorbClient
    redis: aioredis.Redis
    store: Store
    sweeper: Sweeper
    read_upto: str = "-"
    events: list[dict[str, Any]] = field(default_factory=list)

    def scope(self, feed: FeedSpec, course_id: str | None = None) -> Scope:
        """The course scope of `feed` (the biggest course when none is named)."""
        tenant = self.sim.sim.tenant
        course = course_id or max(tenant.by_course, key=lambda c: len(tenant.by_course[c]))
        return course_scope(feed, course)

    async def sweep(self, scope: Scope, *, full: bool = False) -> SweepResult:
        """Take the scope's lease and sweep it once."""
        token = await self.store.acquire(scope.feed.name, scope.key, LEASE_MS)
        assert token is not None
        return await self.sweeper.sweep(scope, token, full=full)

    async def new_events(self) -> list[dict[str, Any]]:
        """CloudEvents appended to the outbox since the last call, in order."""
        fresh = []
        while True:
            start = "-" if self.read_upto == "-" else f"({self.read_upto}"
            batch = await self.store.read_outbox(count=1000, after=start)
            if not batch:
                break
            for entry_id, fields in batch:
                fresh.append(json.loads(fields["event"]))
                self.read_upto = entry_id
        self.events += fresh
        return fresh


def make_engine(
    sim: SimHandle, client: AbsorbClient, redis: aioredis.Redis, *, page_size: int = 50
) -> Engine:
    """An engine on its own key prefix, so tests never see each other's state."""
    store = Store(redis, f"test-{secrets.token_hex(4)}")
    sweeper = Sweeper(client, store, source=sim.url, page_size=page_size)
    return Engine(sim, client, redis, store, sweeper)


def statuses_by_subject(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Events grouped by subject, in outbox order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        grouped.setdefault(event["subject"], []).append(event)
    return grouped


async def put_events(store: Store, events: list[dict[str, Any]], *, feed: str = "f") -> None:
    """Append CloudEvents to the outbox as the engine would (for delivery tests)."""
    from bridge.store import Commit, OutboxEvent

    token = await store.acquire(feed, "delivery-test", LEASE_MS)
    assert token is not None
    commit = Commit(
        events=[
            OutboxEvent(
                id=e["id"],
                subject=e["subject"],
                type=e["type"],
                feed=feed,
                course_id=(e.get("data", {}).get("current") or {}).get("courseId", ""),
                json=json.dumps(e, separators=(",", ":")),
            )
            for e in events
        ]
    )
    await store.commit(feed, "delivery-test", token, commit)


def sample_events(
    count: int, subjects: int = 5, *, source: str = "https://rest.myabsorb.com"
) -> list[dict[str, Any]]:
    """Well-formed CloudEvents of the contract, `count` of them over `subjects` enrollments."""
    statuses = ["NotStarted", "InProgress", "Complete", "Failed"]
    events = []
    for n in range(count):
        subject = f"00000000-0000-4000-8000-{n % subjects:012d}"
        new, old = statuses[(n // subjects + 1) % 4], statuses[(n // subjects) % 4]
        events.append(
            {
                "specversion": "1.0",
                "id": f"{n:032x}",
                "source": source,
                "type": "absorb.course_enrollment.status_changed",
                "subject": subject,
                "time": f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z",
                "datacontenttype": "application/json",
                "status": new,
                "previousstatus": old,
                "data": {
                    "current": {"id": subject, "status": statuses.index(new), "courseId": "c1",
                                "fullName": "Ada Lovelace", "courseName": "First Aid", "score": 90},
                    "previous": {"status": statuses.index(old)},
                    "changed": ["status"],
                },
            }
        )  # fmt: skip
    return events


async def sink_worker(
    redis: aioredis.Redis, sink: Any, prefix: str, **options: Any
) -> tuple[Any, Store]:
    """A started sink behind a real delivery worker on its own key prefix (no circuit breaker)."""
    from bridge.delivery import Circuit, SinkWorker
    from bridge.routes import Route

    store = Store(redis, f"{prefix}-{secrets.token_hex(3)}")
    options.setdefault("circuit", Circuit(threshold=10_000))
    worker = SinkWorker(
        redis, store.prefix, sink, [Route(sinks=(sink.name,))], consumer="test", **options
    )
    await worker.setup()
    await sink.start()
    return worker, store


async def settle_worker(worker: Any, done: Any, timeout_s: float = 20) -> None:
    """Feed and deliver until `done()` holds; failing the test after `timeout_s`."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done():
        assert asyncio.get_running_loop().time() < deadline, "delivery did not settle in time"
        if not await worker.feed_once() + await worker.deliver_once():
            await asyncio.sleep(0.02)
