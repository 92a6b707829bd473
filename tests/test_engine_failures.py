"""The engine under crashes, replicas and bad records: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import redis.asyncio as aioredis

from bridge.absorb.client import AbsorbClient
from bridge.absorb.models import AttemptStatus, FinishAttempt, Status
from bridge.absorb.paths import Op
from bridge.absorb.token_cache import RedisTokenCache
from bridge.absorb.transport import AbsorbTransport, Credentials
from bridge.feeds import FeedSpec, course_scope
from bridge.service import Bridge, Timing
from bridge.store import Commit, Store
from bridge.sweep import Sweeper
from tests.conftest import API_KEY, FAST_RETRY, PASSWORD, USERNAME, MakeClient, StartSimulator
from tests.engine import LEASE_MS, make_engine, statuses_by_subject

FEED = FeedSpec(name="courses", resource="course_enrollments", lookback_s=0)


class Crash(Exception):
    """Stands for the process dying at a chosen step."""


class Steps:
    """Counts steps of a sweep and crashes at step `at` (0: never)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.count = 0

    def step(self) -> None:
        self.count += 1
        if self.count == self.at:
            raise Crash(f"crash at step {self.at}")


class CrashingStore(Store):
    """A real store that can die before or after any commit or snapshot read."""

    steps: Steps

    async def read_snapshots(self, buckets: str, wanted: Any) -> list[bytes | None]:
        self.steps.step()
        return await super().read_snapshots(buckets, wanted)

    async def commit(self, feed: str, scope: str, token: str, commit: Commit) -> None:
        self.steps.step()
        await super().commit(feed, scope, token, commit)
        self.steps.step()


class CrashingTransport(AbsorbTransport):
    """A real transport that can die before or after any request."""

    steps: Steps

    async def request(self, op: Op, **kwargs: Any) -> Any:
        self.steps.step()
        reply = await super().request(op, **kwargs)
        self.steps.step()
        return reply


async def test_a_crash_at_any_step_then_a_restart_loses_nothing(
    start_simulator: StartSimulator, redis: aioredis.Redis
) -> None:
    """For every step of a sweep, dying there and sweeping again gives the same events."""
    sim = await start_simulator(users=80, courses=1, enrollment_ratio=0.9, ilc_ratio=0.0)
    course = next(iter(sim.sim.tenant.courses))
    scope = course_scope(FEED, course)
    rng = random.Random(3)
    crash_at = 1
    while True:
        prefix = f"crash-{crash_at}"
        await redis.delete(*(await redis.keys(f"{prefix}:*")) or [f"{prefix}:none"])
        steps = Steps(0)
        store = CrashingStore(redis, prefix)
        store.steps = steps
        transport = CrashingTransport(
            sim.url, Credentials(API_KEY, USERNAME, PASSWORD), retry=FAST_RETRY
        )
        transport.steps = steps
        sweeper = Sweeper(AbsorbClient(transport, page_size=7), store, source=sim.url)
        token = await store.acquire(FEED.name, scope.key, LEASE_MS)
        assert token is not None
        await sweeper.sweep(scope, token)
        baseline = {rid: ce.status for rid, ce in sim.sim.tenant.by_course[course].items()}
        for rid in rng.sample(sorted(baseline), 25):
            await sim.control(
                "PATCH", f"records/{rid}", {"set": {"status": int(rng.choice(list(Status)))}}
            )
        steps.at, steps.count = crash_at, 0
        crashed = False
        try:
            await sweeper.sweep(scope, token)
        except Crash:
            crashed = True
        steps.at = 0
        restarted = Sweeper(
            AbsorbClient(transport, page_size=7), Store(redis, prefix), source=sim.url
        )
        await restarted.sweep(scope, token)
        await transport.close()
        entries = await Store(redis, prefix).read_outbox(count=10_000)
        events = [json.loads(fields["event"]) for _, fields in entries]
        assert len({e["id"] for e in events}) == len(events), f"duplicate after crash at {crash_at}"
        final = sim.sim.tenant.by_course[course]
        for rid, chain in statuses_by_subject(events).items():
            status = Status(baseline[rid]).name
            for event in chain:
                assert event["previousstatus"] == status, f"crash at {crash_at}: broken chain"
                status = event["status"]
            assert status == Status(final[rid].status).name, f"crash at {crash_at}: lost change"
        changed = {rid for rid in baseline if final[rid].status != baseline[rid]}
        assert changed <= set(statuses_by_subject(events)), f"crash at {crash_at}: lost event"
        if not crashed:
            break
        crash_at += 1
    assert crash_at > 10  # the loop really went through many steps


async def test_two_replicas_emit_each_event_once_and_share_one_token(
    start_simulator: StartSimulator, redis: aioredis.Redis
) -> None:
    """Two bridges on one Redis sweep the same feed concurrently: one login, no duplicates."""
    sim = await start_simulator(users=60, courses=5, enrollment_ratio=0.6)
    feed = FeedSpec(name="all", resource="course_enrollments", lookback_s=2, interval_s=0)

    def replica() -> Bridge:
        cache = RedisTokenCache(redis, prefix="replicas", base_url=sim.url, username=USERNAME)
        transport = AbsorbTransport(
            sim.url, Credentials(API_KEY, USERNAME, PASSWORD), token_cache=cache, retry=FAST_RETRY
        )
        return Bridge(
            client=AbsorbClient(transport, page_size=10),
            store=Store(redis, "replicas"),
            feeds=[feed],
            sinks=[],
            routes=[],
            source=sim.url,
            timing=Timing(concurrency=3),
        )

    a, b = replica(), replica()
    await asyncio.gather(a.sweep_once(force=True), b.sweep_once(force=True))
    assert await a.store.outbox_length() == 0
    baseline = {rid: ce.status for rid, ce in sim.sim.tenant.enrollments.items()}
    for _ in range(8):
        await sim.control("POST", "activity/steps", {"steps": 20})
        swept = await asyncio.gather(a.sweep_once(force=True), b.sweep_once(force=True))
        assert sum(swept) >= 1
    await a.sweep_once(force=True)
    entries = await a.store.read_outbox(count=10_000)
    events = [json.loads(f["event"]) for _, f in entries]
    assert events
    assert len({e["id"] for e in events}) == len(events)
    for rid, chain in statuses_by_subject(events).items():
        if chain[0]["type"].endswith("created"):
            continue
        status = Status(baseline[rid]).name
        for event in chain:
            if event["type"].endswith("status_changed"):
                assert event["previousstatus"] == status
                status = event["status"]
    assert (await sim.state())["logins"] == 1
    await a.client.close()
    await b.client.close()


async def test_a_malformed_record_is_quarantined_and_retried_by_resync(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """A bad record is kept (raw text, error) while the sweep goes on; a full sweep retries it."""
    sim = await start_simulator(users=60)
    engine = make_engine(sim, make_client(sim.url, page_size=8), redis, page_size=8)
    scope = engine.scope(FEED)
    await engine.sweep(scope)
    records = list(sim.sim.tenant.by_course[scope.course_id or ""].values())
    bad, other = records[0], records[1]
    await sim.control(
        "PATCH", f"records/{bad.id}", {"raw": {"status": "banana"}, "set": {"progress": 1}}
    )
    new = Status.Failed if other.status != Status.Failed else Status.Complete
    await sim.control("PATCH", f"records/{other.id}", {"set": {"status": int(new)}})
    result = await engine.sweep(scope)
    assert result.quarantined == 1
    assert [e["subject"] for e in await engine.new_events()] == [other.id]
    held = await engine.store.quarantined(FEED.name)
    assert list(held) == [f"{scope.key}|{bad.id}"]
    entry = json.loads(held[f"{scope.key}|{bad.id}"])
    assert "banana" in entry["raw"]
    assert "status" in entry["error"]
    fixed = Status.Complete if bad.status != Status.Complete else Status.Failed
    await sim.control("PATCH", f"records/{bad.id}", {"raw": None, "set": {"status": int(fixed)}})
    await engine.sweep(scope, full=True)
    assert await engine.store.quarantined(FEED.name) == {}
    events = await engine.new_events()
    assert [(e["subject"], e["status"]) for e in events] == [(bad.id, fixed.name)]


async def test_drill_down_reports_lessons_chapters_and_attempts(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """When a course enrollment changes, its lesson, chapter and attempt changes are events too."""
    sim = await start_simulator(users=30, ilc_ratio=0.0, approval_ratio=0.0)
    client = make_client(sim.url)
    engine = make_engine(sim, client, redis)
    feed = FeedSpec(
        name="deep",
        resource="course_enrollments",
        details=frozenset({"lessons", "chapters", "attempts"}),
    )
    ce = next(
        e
        for e in sim.sim.tenant.enrollments.values()
        if e.status == Status.NotStarted and e.lessons
    )
    scope = course_scope(feed, ce.course.id)
    await engine.sweep(scope)
    lesson = ce.lessons[0]
    started = await client.start_attempt(ce.user.id, ce.course.id, lesson.lesson.id)
    await client.finish_attempt(
        started.attempt_id, FinishAttempt(status=AttemptStatus.Complete, score=95)
    )
    await engine.sweep(scope)
    events = await engine.new_events()
    kinds = {(e["type"], e["subject"]): e for e in events}
    assert ("absorb.course_enrollment.status_changed", ce.id) in kinds
    # The bridge had never seen these records: they are announced with their status now.
    assert kinds[("absorb.lesson_enrollment.created", lesson.id)]["status"] == "Complete"
    assert kinds[("absorb.attempt.created", started.attempt_id)]["status"] == "Complete"
    chapter = lesson.chapter_enrollment
    assert ("absorb.chapter_enrollment.created", chapter.id) in kinds
    untouched = {le.id for le in ce.lessons[1:]}
    assert untouched
    assert not untouched & {e["subject"] for e in events}, "untouched lessons were announced"
    # An admin fails the lesson and the course enrollment moves: now it is a transition.
    await sim.control("PATCH", f"records/{lesson.id}", {"set": {"status": int(Status.Failed)}})
    await sim.control("PATCH", f"records/{ce.id}", {"set": {"progress": 1}})
    await engine.sweep(scope)
    events = await engine.new_events()
    moved = [(e["type"], e["subject"], e.get("previousstatus"), e["status"]) for e in events]
    assert ("absorb.lesson_enrollment.status_changed", lesson.id, "Complete", "Failed") in moved
    assert all(subject != started.attempt_id for _, subject, _, _ in moved)


def _per_subject(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {
        subject: [e["id"] for e in chain] for subject, chain in statuses_by_subject(events).items()
    }


async def test_file_sink_gets_routed_events_in_order(
    start_simulator: StartSimulator,
    make_client: MakeClient,
    redis: aioredis.Redis,
    tmp_path: Any,
) -> None:
    """The daemon's steps move outbox events through routes into the file sink, in order."""
    from bridge.routes import Route
    from bridge.sinks.file import FileSink

    sim = await start_simulator(users=60, courses=3)
    client = make_client(sim.url)
    feed = FeedSpec(name="all", resource="course_enrollments", lookback_s=0)
    audit, done = (
        FileSink("audit", tmp_path / "audit.jsonl"),
        FileSink("done", tmp_path / "done.jsonl"),
    )
    bridge = Bridge(
        client=client,
        store=Store(redis, "files"),
        feeds=[feed],
        sinks=[audit, done],
        routes=[
            Route(sinks=("audit",)),
            Route(sinks=("done",), types=frozenset({"absorb.course_enrollment.status_changed"}),
                  statuses=frozenset({"Complete"})),
        ],
        source=sim.url,
    )  # fmt: skip
    for sink in (audit, done):
        await sink.start()
    for worker in bridge.workers:
        await worker.setup()
    await bridge.sweep_once(force=True)
    for _ in range(5):
        await sim.control("POST", "activity/steps", {"steps": 30})
        await bridge.sweep_once(force=True)
    await bridge.deliver_once()
    outbox = [json.loads(f["event"]) for _, f in await bridge.store.read_outbox(count=10_000)]
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert sorted(e["id"] for e in lines) == sorted(e["id"] for e in outbox)
    assert _per_subject(lines) == _per_subject(outbox)
    completes = [json.loads(x) for x in (tmp_path / "done.jsonl").read_text().splitlines()]
    wanted = [
        e for e in outbox if e["type"].endswith("status_changed") and e["status"] == "Complete"
    ]
    assert _per_subject(completes) == _per_subject(wanted)
    assert completes
    await bridge.stop()


async def test_quiet_scopes_back_off_and_a_change_resets_the_pace(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """Each quiet sweep doubles a scope's interval up to max_interval; a change resets it."""
    sim = await start_simulator(users=40)
    feed = FeedSpec(name="pace", resource="course_enrollments", interval_s=10, max_interval_s=60)
    bridge = Bridge(
        client=make_client(sim.url), store=Store(redis, "pace"), feeds=[feed], sinks=[],
        routes=[], source=sim.url,
    )  # fmt: skip
    course = max(sim.sim.tenant.by_course, key=lambda c: len(sim.sim.tenant.by_course[c]))
    scope = course_scope(feed, course)
    intervals = []
    for _ in range(5):
        await bridge.sweep_scope(scope)
        intervals.append((await bridge.store.scope_state(feed.name, scope.key))["interval_s"])
    assert intervals == ["10", "20", "40", "60", "60"]  # the baseline itself is news
    rid = next(iter(sim.sim.tenant.by_course[course]))
    await sim.control("PATCH", f"records/{rid}", {"set": {"status": int(Status.Absent)}})
    await bridge.sweep_scope(scope)
    assert (await bridge.store.scope_state(feed.name, scope.key))["interval_s"] == "10"
