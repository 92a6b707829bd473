"""The engine against the simulator over HTTP and a real Redis: sweeps, snapshots, events."""

from __future__ import annotations

import itertools
import random
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis

from bridge.absorb.models import Status
from bridge.absorb.timefmt import format_datetime
from bridge.feeds import FeedSpec
from tests.conftest import MakeClient, StartSimulator
from tests.engine import Engine, make_engine, statuses_by_subject

FEED = FeedSpec(name="courses", resource="course_enrollments", lookback_s=5)
#: No overlap: a record the paging skipped would stay lost, so these tests see every skip.
EXACT = FeedSpec(name="exact", resource="course_enrollments", lookback_s=0)


async def _engine(
    start_simulator: StartSimulator,
    make_client: MakeClient,
    redis: aioredis.Redis,
    *,
    page_size: int = 50,
    **tenant: Any,
) -> Engine:
    sim = await start_simulator(**tenant)
    return make_engine(sim, make_client(sim.url, page_size=page_size), redis, page_size=page_size)


def _records(engine: Engine, course: str) -> dict[str, Any]:
    return engine.sim.sim.tenant.by_course[course]


async def test_baseline_records_silently_then_reports_changes(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """The first sweep emits nothing; later a status change is one status_changed event."""
    engine = await _engine(start_simulator, make_client, redis, users=60, page_size=7)
    scope = engine.scope(FEED)
    first = await engine.sweep(scope)
    assert first.records == len(_records(engine, scope.course_id or ""))
    assert await engine.new_events() == []
    assert (await engine.sweep(scope)).events == 0
    ce = next(iter(_records(engine, scope.course_id or "").values()))
    new = Status.Failed if ce.status != Status.Failed else Status.Complete
    await engine.sim.control("PATCH", f"records/{ce.id}", {"set": {"status": int(new)}})
    await engine.sweep(scope)
    events = await engine.new_events()
    assert [(e["type"], e["subject"]) for e in events] == [
        ("absorb.course_enrollment.status_changed", ce.id)
    ]
    event = events[0]
    assert event["status"] == new.name
    assert event["previousstatus"] == Status(_prev(engine, ce.id, new)).name
    assert event["specversion"] == "1.0"
    assert event["source"] == engine.sim.url
    assert event["datacontenttype"] == "application/json"
    assert event["data"]["current"]["id"] == ce.id
    assert event["data"]["previous"]["status"] == _prev(engine, ce.id, new)
    assert "status" in event["data"]["changed"]
    assert event["time"].endswith("Z")


def _prev(engine: Engine, rid: str, new: Status) -> int:
    changes = [c for c in engine.sim.sim.tenant.changes if c.id == rid and c.status == new]
    assert changes[-1].previous_status is not None
    return changes[-1].previous_status


async def test_emit_first_sync_sends_created_events(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """With `first_sync: emit` every enrollment of the first sweep is a created event."""
    engine = await _engine(start_simulator, make_client, redis, users=50, page_size=9)
    feed = FeedSpec(name="emit", resource="course_enrollments", emit_on_first_sync=True)
    scope = engine.scope(feed)
    await engine.sweep(scope)
    events = await engine.new_events()
    assert {e["subject"] for e in events} == set(_records(engine, scope.course_id or ""))
    assert {e["type"] for e in events} == {"absorb.course_enrollment.created"}
    assert all("previousstatus" not in e for e in events)
    assert len({e["id"] for e in events}) == len(events)


async def test_every_status_transition_is_one_event(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """All 156 ordered pairs of Absorb's 13 statuses each give exactly one right event."""
    engine = await _engine(
        start_simulator, make_client, redis, users=170, courses=1, enrollment_ratio=1.0,
        ilc_ratio=0.0, page_size=40,
    )  # fmt: skip
    scope = engine.scope(FEED)
    await engine.sweep(scope)
    pairs = list(itertools.permutations(Status, 2))
    enrollments = list(_records(engine, scope.course_id or ""))[: len(pairs)]
    assert len(enrollments) == len(pairs)
    for rid, (old, _new) in zip(enrollments, pairs, strict=True):
        await engine.sim.control("PATCH", f"records/{rid}", {"set": {"status": int(old)}})
    await engine.sweep(scope)
    await engine.new_events()
    for rid, (_old, new) in zip(enrollments, pairs, strict=True):
        await engine.sim.control("PATCH", f"records/{rid}", {"set": {"status": int(new)}})
    await engine.sweep(scope)
    events = await engine.new_events()
    got = {e["subject"]: (e["previousstatus"], e["status"], e["type"]) for e in events}
    assert len(events) == len(pairs)
    for rid, (old, new) in zip(enrollments, pairs, strict=True):
        assert got[rid] == (old.name, new.name, "absorb.course_enrollment.status_changed")


async def test_reconciliation_finds_removed_enrollments(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """An un-enrolled learner is invisible to incremental sweeps; a full sweep emits removed."""
    engine = await _engine(start_simulator, make_client, redis, users=60, page_size=8)
    scope = engine.scope(FEED)
    await engine.sweep(scope)
    gone = list(_records(engine, scope.course_id or ""))[:3]
    for rid in gone:
        await engine.sim.control("DELETE", f"records/{rid}")
    await engine.sweep(scope)
    assert await engine.new_events() == []
    result = await engine.sweep(scope, full=True)
    events = await engine.new_events()
    assert result.removed == 3
    assert sorted(e["subject"] for e in events) == sorted(gone)
    assert {e["type"] for e in events} == {"absorb.course_enrollment.removed"}
    assert all(e["data"]["current"] is None for e in events)
    assert (await engine.sweep(scope, full=True)).removed == 0


async def test_nothing_lost_or_doubled_while_records_move_under_the_pages(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """Randomized rounds of edits between and during page requests: chains stay whole."""
    engine = await _engine(
        start_simulator, make_client, redis, users=120, courses=2, enrollment_ratio=0.9,
        page_size=5,
    )  # fmt: skip
    scope = engine.scope(EXACT)
    await engine.sweep(scope)
    baseline = {rid: ce.status for rid, ce in _records(engine, scope.course_id or "").items()}
    rng = random.Random(5)
    await engine.sim.set_faults(mutate_while_paging=2)
    for _round in range(12):
        for rid in rng.sample(sorted(baseline), 30):
            status = rng.choice(list(Status))
            await engine.sim.control("PATCH", f"records/{rid}", {"set": {"status": int(status)}})
        await engine.sweep(scope)
    await engine.sim.set_faults(mutate_while_paging=0)
    await engine.sweep(scope)
    await engine.new_events()
    _assert_chains(engine, baseline, scope.course_id or "")


def _assert_chains(engine: Engine, baseline: dict[str, int], course: str) -> None:
    events = engine.events
    assert len({e["id"] for e in events}) == len(events), "an event id repeats"
    for rid, chain in statuses_by_subject(events).items():
        status = Status(baseline[rid]).name
        for event in chain:
            assert event["previousstatus"] == status, f"{rid}: chain broken at {event['id']}"
            status = event["status"]
        assert status == Status(_records(engine, course)[rid].status).name, f"{rid}: ends wrong"
    changed = {rid for rid, ce in _records(engine, course).items() if ce.status != baseline[rid]}
    assert changed <= set(statuses_by_subject(events)), "a changed enrollment has no event"


async def test_many_records_sharing_one_timestamp_across_pages(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """Thirty records edited at the same instant, read seven at a time, all give events."""
    engine = await _engine(start_simulator, make_client, redis, users=150, page_size=7)
    scope = engine.scope(EXACT)
    await engine.sweep(scope)
    same = format_datetime(engine.sim.sim.clock.now() + timedelta(seconds=1))
    targets = list(_records(engine, scope.course_id or ""))[:30]
    for rid in targets:
        body = {"set": {"status": int(Status.NotApplicable), "dateEdited": same}}
        await engine.sim.control("PATCH", f"records/{rid}", body)
    await engine.sweep(scope)
    events = await engine.new_events()
    assert sorted(e["subject"] for e in events) == sorted(targets)
    later = format_datetime(engine.sim.sim.clock.now() + timedelta(seconds=2))
    for rid in targets:
        body = {"set": {"status": int(Status.Absent), "dateEdited": later}}
        await engine.sim.control("PATCH", f"records/{rid}", body)
    await engine.sweep(scope)
    events = await engine.new_events()
    assert sorted(e["subject"] for e in events) == sorted(targets)
    assert {(e["previousstatus"], e["status"]) for e in events} == {("NotApplicable", "Absent")}


async def test_clock_skew_between_absorb_and_the_bridge(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """Absorb's clock minutes behind or ahead of the bridge's loses no change."""
    engine = await _engine(start_simulator, make_client, redis, users=60, page_size=10)
    scope = engine.scope(EXACT)
    await engine.sweep(scope)
    baseline = {rid: ce.status for rid, ce in _records(engine, scope.course_id or "").items()}
    rng = random.Random(9)
    for skew in (-900, 600, -300, 0):
        await engine.sim.control("POST", "clock", {"skew_s": skew})
        for rid in rng.sample(sorted(baseline), 5):
            status = rng.choice(list(Status))
            await engine.sim.control("PATCH", f"records/{rid}", {"set": {"status": int(status)}})
        await engine.sweep(scope)
    await engine.new_events()
    _assert_chains(engine, baseline, scope.course_id or "")


async def test_an_unreadable_record_at_the_newest_time_is_handled_once(
    redis: aioredis.Redis,
) -> None:
    """A page's quarantined record edited at its newest time counts as handled there.

    Otherwise the next page, which starts at that time, would read it and
    quarantine it again.
    """
    from bridge.absorb.client import RawPage
    from bridge.feeds import course_scope
    from bridge.store import Store
    from bridge.sweep import Sweeper, _Run

    def record(n: int, edited: str, status: object = 1) -> dict[str, Any]:
        return {"id": f"00000000-0000-4000-8000-{n:012d}", "courseId": "c", "status": status,
                "dateEdited": edited}  # fmt: skip

    t1, t2 = "2026-01-01T00:00:01.0000000", "2026-01-01T00:00:02.0000000"
    batch: list[object] = [
        record(1, t1),
        record(2, t2),
        record(3, t2, status="banana"),
        record(4, t2),
    ]
    store = Store(redis, "unreadable")
    feed = FeedSpec(name="f", resource="course_enrollments")
    scope = course_scope(feed, "c")
    token = await store.acquire(feed.name, scope.key, 60_000)
    assert token is not None
    sweeper = Sweeper(client=None, store=store, source="s", page_size=4)  # type: ignore[arg-type]
    run = _Run(sweeper, scope, token, full=False)
    run.buckets = 1
    handled = await run._process(batch, RawPage(4, 4, 4, 0, batch))
    await run._settle()
    assert handled.newest is not None
    assert format_datetime(handled.newest, zulu=False) == t2
    assert handled.at_newest == {f"00000000-0000-4000-8000-{n:012d}" for n in (2, 3, 4)}
    assert run.result.quarantined == 1
