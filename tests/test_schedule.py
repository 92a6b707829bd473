"""Scheduling under one budget: the interval kept, hints first but never starving, replicas sharing.

The policy is tested as the pure code it is; the daemon's scheduler against a
real Redis and the simulator over HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import redis.asyncio as aioredis

from bridge import clock, keys
from bridge.absorb.client import AbsorbClient
from bridge.absorb.models import Status
from bridge.feeds import FeedSpec, Scope, course_scope
from bridge.hints import Hints
from bridge.ratelimit import SharedRateLimiter
from bridge.schedule.figures import figures
from bridge.schedule.policy import Tuning, View, rank
from bridge.schedule.runner import RANK_EVERY_S
from bridge.service import Bridge, Timing
from bridge.store import Store
from tests.conftest import MakeClient, SimHandle, StartSimulator, free_port

TUNING = Tuning()
#: How late past its interval the daemon may sweep a scope (README: the scheduling jitter).
JITTER_S = RANK_EVERY_S


def _bridge(
    sim: SimHandle, client: AbsorbClient, store: Store, feed: FeedSpec, timing: Timing | None = None
) -> Bridge:
    """A bridge sweeping one feed of the simulator, with no sinks."""
    return Bridge(
        client=client, store=store, feeds=[feed], sinks=[], routes=[], source=sim.url,
        timing=timing or Timing(),
    )  # fmt: skip


def _record_sweeps(bridge: Bridge, starts: list[tuple[str, float]]) -> None:
    """Note (scope key, start) of every sweep the bridge completes."""
    swept = bridge.scheduler.swept

    async def recording(scope: Scope, *, started: float, changed: int, cost: int) -> None:
        starts.append((scope.key, started))
        await swept(scope, started=started, changed=changed, cost=cost)

    bridge.scheduler.swept = recording  # type: ignore[method-assign]


def _by_scope(starts: list[tuple[str, float]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for key, at in sorted(starts, key=lambda s: s[1]):
        out.setdefault(key, []).append(at)
    return out


def _views(ages: dict[str, float], now: float, interval: float = 10.0) -> list[View]:
    return [View(k, interval, now - age, 0.01) for k, age in ages.items()]


def test_hinted_scopes_go_before_stale_ones_and_fresh_ones_are_left() -> None:
    """A hinted scope is swept before stale ones; a scope within its interval only if hinted."""
    now = 1000.0
    # A budget cycle of 100 s: nobody is past the staleness bound yet.
    plan = rank(_views({"stale": 20, "staler": 30, "fresh": 1}, now), now, 100.0, TUNING)
    assert plan.keys == ["staler", "stale"]  # the fresh one is not spent on
    assert plan.take(1, ["fresh"]) == ["fresh"]
    assert plan.take(5) == ["staler", "stale"]
    assert plan.take(5) == []  # idle: nothing stale is left, no hint


def test_a_flood_of_hints_cannot_starve_stale_scopes() -> None:
    """Hints take at most their share of the slots; scopes past the bound go before any hint."""
    now = 1000.0
    hints = [f"h{i}" for i in range(1000)]
    plan = rank(_views({"stale": 15, "overdue": 500}, now), now, 10.0, TUNING)
    first = plan.take(4, hints)
    assert first[0] == "overdue"  # past the staleness bound: before every hint
    assert "stale" in first
    assert sum(k.startswith("h") for k in first) <= 2


def test_every_scope_is_swept_within_its_interval_with_spare_budget() -> None:
    """Simulated hours: with budget to spare, no scope's age ever passes its interval (+1 step)."""
    interval, step, now = 5.0, 0.25, 0.0
    # A running daemon: the last sweeps spread over an interval (the budget spreads them).
    swept = {f"s{i}": -interval * i / 40 for i in range(40)}
    worst = 0.0
    while now < 4 * 3600:
        plan = rank([View(k, interval, at, 0.001) for k, at in swept.items()], now, 0.5, TUNING)
        for key in plan.take(4):  # 16 sweeps/s of budget for 8/s needed
            swept[str(key)] = now
        worst = max(worst, max(now - at for at in swept.values()))
        now += step
    assert worst <= interval + step


async def test_the_daemon_keeps_the_interval_after_hours_of_quiet(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """Hours without a change: every scope is still swept every interval (plus the jitter)."""
    sim = await start_simulator(users=20, courses=5)
    feed = FeedSpec(name="kept", resource="course_enrollments", interval_s=0.5)
    bridge = _bridge(sim, make_client(sim.url), Store(redis, "kept"), feed, Timing(idle_s=0.05))
    starts: list[tuple[str, float]] = []
    _record_sweeps(bridge, starts)
    await bridge.start()
    try:
        await asyncio.sleep(1.0)
        clock.set_offset(4 * 3600)  # four quiet hours pass at once
        jumped = clock.now().timestamp()
        await asyncio.sleep(2.5)
        ended = clock.now().timestamp()
    finally:
        await bridge.stop()
        clock.set_offset(0)
    after = _by_scope([(k, at) for k, at in starts if at >= jumped])
    assert len(after) == 5
    for key, ats in after.items():
        edges = [jumped, *ats, ended]
        gaps = [b - a for a, b in itertools.pairwise(edges)]
        assert max(gaps) <= feed.interval_s + JITTER_S, (key, gaps)
        assert len(ats) >= 3, (key, ats)


async def test_two_changes_more_than_two_intervals_apart_give_two_events(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """InProgress -> Failed -> Absent is seen as two transitions, also after a quiet while."""
    sim = await start_simulator(users=20, courses=2)
    feed = FeedSpec(name="twice", resource="course_enrollments", interval_s=0.3)
    store = Store(redis, "twice")
    bridge = _bridge(
        sim, make_client(sim.url), store, feed, Timing(idle_s=0.05, stats_interval_s=0.5)
    )
    tenant = sim.sim.tenant
    course = max(tenant.by_course, key=lambda c: len(tenant.by_course[c]))
    rid = next(iter(tenant.by_course[course]))
    await bridge.start()
    try:
        await asyncio.sleep(2.0)  # baselined, then quiet for many intervals
        for status in (Status.Failed, Status.Absent):
            await sim.control("PATCH", f"records/{rid}", {"set": {"status": int(status)}})
            await asyncio.sleep(0.9)  # three intervals
    finally:
        await bridge.stop()
    outbox = await store.read_outbox()
    seen = [json.loads(f["event"]).get("status") for _, f in outbox if f["subject"] == rid]
    assert seen == ["Failed", "Absent"]


async def test_a_hint_that_arrives_during_a_sweep_survives_it(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """A sweep clears the hints it answers, not one newer than its start."""
    sim = await start_simulator(users=10, courses=1)
    feed = FeedSpec(name="hinted", resource="course_enrollments", interval_s=60)
    bridge = _bridge(sim, make_client(sim.url), Store(redis, "hinted"), feed)
    course = next(iter(sim.sim.tenant.by_course))
    scope = course_scope(feed, course)
    hints = Hints(redis, "hinted")
    assert bridge.scopes_for_course(course.upper()) == [("hinted", scope.key)]
    await hints.add(feed.name, scope.key, at=clock.now().timestamp() - 5)
    await bridge.sweep_scope(scope)
    assert await hints.pending(feed.name) == {}  # answered
    now = clock.now().timestamp()
    await hints.add(feed.name, scope.key, at=now + 0.5)  # came in while the sweep ran
    await bridge.scheduler.swept(scope, started=now, changed=0, cost=1)
    assert scope.key in await hints.pending(feed.name)


async def test_the_daemon_sweeps_a_hinted_scope_at_once_within_its_interval(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """A hint makes the running daemon sweep a fresh scope within a step or two, and only it."""
    sim = await start_simulator(users=10, courses=3)
    feed = FeedSpec(name="nudged", resource="course_enrollments", interval_s=60)
    bridge = _bridge(sim, make_client(sim.url), Store(redis, "nudged"), feed, Timing(idle_s=0.05))
    starts: list[tuple[str, float]] = []
    _record_sweeps(bridge, starts)
    course = next(iter(sim.sim.tenant.by_course))
    ((_, key),) = bridge.scopes_for_course(course)
    await bridge.start()
    try:
        await asyncio.sleep(1.0)  # every scope baselined; none due for a minute
        baselined = len(starts)
        hinted_at = clock.now().timestamp()
        await Hints(redis, "nudged").add(feed.name, key, at=hinted_at)
        await asyncio.sleep(0.6)
    finally:
        await bridge.stop()
    assert baselined == 3
    assert [k for k, at in starts[baselined:]] == [key]
    assert starts[-1][1] - hinted_at < 0.5
    assert await Hints(redis, "nudged").pending(feed.name) == {}


async def test_degradation_keeps_hot_scopes_fresh_and_shows_the_shortfall(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """Too little budget: a hot scope is swept more often, every scope within the bound."""
    sim = await start_simulator(users=30, courses=12)
    feed = FeedSpec(name="short", resource="course_enrollments", interval_s=0.2)
    store = Store(redis, "short")
    rate = 6.0  # 12 scopes every 0.2 s would need 60 requests/s
    limiter = SharedRateLimiter(redis, keys.absorb_budget("short", sim.url), rate, burst=1)
    bridge = _bridge(
        sim,
        make_client(sim.url, limiter=limiter),
        store,
        feed,
        Timing(idle_s=0.05, requests_per_s=rate, concurrency=2),
    )
    tenant = sim.sim.tenant
    hot = max(tenant.by_course, key=lambda c: len(tenant.by_course[c]))
    hot_rids = list(tenant.by_course[hot])
    starts: list[tuple[str, float]] = []
    _record_sweeps(bridge, starts)
    await bridge.start()
    try:
        for n in range(30):
            rid = hot_rids[n % len(hot_rids)]
            status = Status.InProgress if n % 2 else Status.Complete
            await sim.control("PATCH", f"records/{rid}", {"set": {"status": int(status)}})
            await asyncio.sleep(0.25)
        figs = await figures(store, [feed], rate, clock.now().timestamp())
    finally:
        await bridge.stop()
    (fig,) = figs
    sweeps = {key: len(ats) for key, ats in _by_scope(starts).items()}
    cold = sorted(n for key, n in sweeps.items() if key != f"course:{hot}")
    assert sweeps[f"course:{hot}"] >= 1.5 * cold[len(cold) // 2], sweeps
    assert len(cold) == 11  # every cold scope was swept too
    assert fig.age_max_s is not None
    assert fig.age_max_s <= fig.bound_s + 1.0
    warning = fig.warning()
    assert warning is not None
    assert "6 requests/s" in warning
    assert "short" in warning


async def test_two_replicas_share_the_budget_and_the_schedule(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """Two replicas, one budget: requests within budget + 5 %, no scope swept twice an interval."""
    sim = await start_simulator(users=30, courses=8)
    feed = FeedSpec(name="pair", resource="course_enrollments", interval_s=0.5)
    rate, duration = 20.0, 4.0
    starts: list[tuple[str, float]] = []
    bridges = []
    for _ in range(2):
        limiter = SharedRateLimiter(redis, keys.absorb_budget("pair", sim.url), rate, burst=1)
        bridge = _bridge(
            sim,
            make_client(sim.url, limiter=limiter),
            Store(redis, "pair"),
            feed,
            Timing(idle_s=0.05, requests_per_s=rate),
        )
        _record_sweeps(bridge, starts)
        bridges.append(bridge)
    before = sim.sim.requests.get("total", 0)
    began = time.monotonic()
    for bridge in bridges:
        await bridge.start()
    await asyncio.sleep(duration)
    for bridge in bridges:
        await bridge.stop()
    took = time.monotonic() - began
    sent = sim.sim.requests.get("total", 0) - before
    assert sent <= (rate * took + 1) * 1.05, (sent, took)
    by_scope = _by_scope(starts)
    assert len(by_scope) == 8
    for key, ats in by_scope.items():
        gaps = [b - a for a, b in itertools.pairwise(ats)]
        assert all(g >= feed.interval_s - 0.05 for g in gaps), (key, gaps)


async def test_the_budget_falls_back_to_this_process_when_redis_is_unreachable() -> None:
    """No Redis: requests still go, paced by a limiter of this process at the same rate."""
    port = free_port()
    dead = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    limiter = SharedRateLimiter(dead, "absorb-budget", 1000.0, burst=3)
    try:
        for _ in range(3):
            await limiter.acquire()  # the burst: no wait, all on the local limiter
        assert limiter.local.reserve() > 0  # the local limiter has spent its burst
    finally:
        await dead.aclose()
