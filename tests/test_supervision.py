"""Loops that cannot die: any exception in any loop is logged, counted and survived, and
health tells a stalled, dead or wedged loop from a quiet one."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import structlog

from bridge import health, metrics
from bridge.absorb.client import AbsorbClient
from bridge.absorb.models import Status
from bridge.feeds import FeedSpec
from bridge.routes import Route
from bridge.service import Bridge, Timing
from bridge.sinks.base import Sink
from bridge.sinks.file import FileSink
from bridge.snapshots import Snapshot
from bridge.store import Store
from tests.conftest import MakeClient, SimHandle, StartSimulator, until

#: Quick enough that a test takes seconds; bounds wide enough not to trip on a busy machine.
FAST = Timing(
    lease_ttl_s=0.9,
    discovery_interval_s=30.0,
    idle_s=0.05,
    grace_s=2.0,
    trim_interval_s=0.2,
    stats_interval_s=0.2,
    stall_floor_s=30.0,
    wedge_floor_s=60.0,
)
FEED = FeedSpec(
    name="courses", resource="course_enrollments", interval_s=0.1, max_interval_s=0.2, lookback_s=5
)


def make_bridge(
    client: AbsorbClient,
    redis: aioredis.Redis,
    sim: SimHandle,
    sinks: Sequence[Sink],
    *,
    prefix: str = "sup",
    timing: Timing = FAST,
) -> Bridge:
    """A bridge with one every-course feed routed to every sink."""
    return Bridge(
        client=client,
        store=Store(redis, prefix),
        feeds=[FEED],
        sinks=sinks,
        routes=[Route(sinks=tuple(s.name for s in sinks))],
        source=sim.url,
        timing=timing,
    )


async def baselined(bridge: Bridge) -> bool:
    """Whether every scope of every feed has finished its baseline."""
    for feed in bridge.feeds:
        if not feed.scopes:
            return False
        for scope in feed.scopes:
            state = await bridge.store.scope_state(feed.spec.name, scope.key)
            if state.get("baseline") != "done":
                return False
    return True


async def change_one(sim: SimHandle, n: int = 0) -> str:
    """Move the n-th enrollment of the biggest course to a status it does not have; its id."""
    tenant = sim.sim.tenant
    course = max(tenant.by_course, key=lambda c: len(tenant.by_course[c]))
    rid = sorted(tenant.by_course[course])[n]
    now = tenant.enrollments[rid].status
    status = Status.Absent if now != Status.Absent else Status.Complete
    await sim.control("PATCH", f"records/{rid}", {"set": {"status": int(status)}})
    return rid


def file_subjects(path: Path) -> set[str]:
    """Subjects of the status changes a file sink has written."""
    if not path.exists():
        return set()
    events = [json.loads(line) for line in path.read_text().splitlines()]
    return {e["subject"] for e in events if e["type"].endswith("status_changed")}


def errors_of(loop: str) -> float:
    """Errors survived by the loop `loop` and its lanes (`loop:n`); the counter is process-wide."""
    return sum(
        s.value
        for family in metrics.LOOP_ERRORS.collect()
        for s in family.samples
        if s.name.endswith("_total")
        and (s.labels["loop"] == loop or s.labels["loop"].startswith(f"{loop}:"))
    )


def fail_first(
    monkeypatch: pytest.MonkeyPatch, target: object, name: str, error: Exception, times: int = 2
) -> list[int]:
    """Make `target.name` raise `error` on its first `times` calls; the list counts the calls."""
    original = getattr(target, name)
    calls: list[int] = []

    async def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return await original(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)
    return calls


@pytest.fixture
async def running(
    start_simulator: StartSimulator,
    make_client: MakeClient,
    redis: aioredis.Redis,
    tmp_path: Path,
) -> AsyncIterator[tuple[Bridge, SimHandle, Path]]:
    """A bridge (not yet started) on a real Redis and the simulator, with a file sink."""
    sim = await start_simulator(users=30, courses=3)
    path = tmp_path / "audit.jsonl"
    bridge = make_bridge(make_client(sim.url), redis, sim, [FileSink("audit", path)])
    yield bridge, sim, path
    await bridge.stop()


def _faults() -> dict[str, Callable[[Bridge, pytest.MonkeyPatch], list[int]]]:
    """Per loop: how to make its step raise something no one expects."""
    return {
        "schedule": lambda b, mp: fail_first(
            mp, b.scheduler, "rank", RuntimeError("scheduler bug")
        ),
        "sweep": lambda b, mp: fail_first(
            mp, b.sweeper, "sweep", OverflowError("float too large to pack with f format")
        ),
        "discovery:courses": lambda b, mp: fail_first(
            mp, b, "_discover_step", TypeError("bad course list")
        ),
        "open:audit": lambda b, mp: fail_first(mp, b.workers[0], "setup", ValueError("open")),
        "feed:audit": lambda b, mp: fail_first(mp, b.workers[0], "feed_once", KeyError("feed")),
        "deliver:audit": lambda b, mp: fail_first(
            mp, b.workers[0], "deliver_once", ZeroDivisionError("lane")
        ),
        "trim": lambda b, mp: fail_first(mp, b.store, "trim_outbox", RuntimeError("trim")),
        "stats": lambda b, mp: fail_first(mp, b.store, "outbox_length", KeyError("stats")),
        "renew": _renew_fails,
    }


def _renew_fails(bridge: Bridge, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Lease renewals fail; every sweep outlasts a renewal period, so that renewals happen."""
    original = bridge.sweeper.sweep

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(FAST.lease_ttl_s / 2)
        return await original(*args, **kwargs)

    monkeypatch.setattr(bridge.sweeper, "sweep", slow)
    return fail_first(monkeypatch, bridge.store, "renew", AttributeError("renew"))


@pytest.mark.parametrize("loop", list(_faults()))
async def test_an_exception_in_any_loop_is_logged_counted_and_survived(
    running: tuple[Bridge, SimHandle, Path], monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    """Each loop's step raises twice: each error is logged with the loop's name and counted,
    and the bridge still sweeps and delivers a later change (a sink's two delivery lanes
    share the step, so their errors are counted together)."""
    bridge, sim, path = running
    calls = _faults()[loop](bridge, monkeypatch)
    before = errors_of(loop)
    with structlog.testing.capture_logs() as logs:
        await bridge.start()
        await until(lambda: _true(len(calls) > 2), f"{loop} to run again after its errors")
        await until(lambda: baselined(bridge), "every scope's baseline")
        rid = await change_one(sim)
        await until(lambda: _true(rid in file_subjects(path)), "the change in the file sink")
    failed = [e for e in logs if e["event"] == "loop.failed" and e["loop"].startswith(loop)]
    assert len(failed) >= 2, logs
    assert errors_of(loop) - before >= 2
    assert not [e for e in logs if e["event"] == "loop.dead"]
    assert bridge.liveness()[0]


async def _true(value: bool) -> bool:
    return value


async def test_one_scope_that_raises_does_not_stop_the_others(
    start_simulator: StartSimulator,
    make_client: MakeClient,
    redis: aioredis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Packing one course's snapshot raises OverflowError (as a progress of 1e39 once did):
    that course's sweep fails and says why, every other course is swept in the same round,
    and the failed one is swept once the fault is gone."""
    sim = await start_simulator(users=30, courses=4)
    bridge = make_bridge(make_client(sim.url), redis, sim, [])
    original = Snapshot.pack
    broken = {"on": True}

    def pack(self: Snapshot) -> bytes:
        if broken["on"]:
            broken["on"] = False
            raise OverflowError("float too large to pack with f format")
        return original(self)

    monkeypatch.setattr(Snapshot, "pack", pack)
    with structlog.testing.capture_logs() as logs:
        swept = await bridge.sweep_once(force=True)
    scopes = bridge.feeds[0].scopes
    assert swept == len(scopes) - 1
    [failure] = [e for e in logs if e["event"] == "loop.failed"]
    assert failure["loop"] == "sweep"
    assert "OverflowError" in failure["error"]
    states = [await bridge.store.scope_state("courses", s.key) for s in scopes]
    assert sum(s.get("baseline") == "done" for s in states) == len(scopes) - 1
    [bad] = [s for s in states if s.get("baseline") != "done"]
    assert "OverflowError" in bad["last_error"]
    assert await bridge.sweep_once(force=True) == len(scopes)
    assert await baselined(bridge)


async def test_readiness_names_a_stalled_loop_and_liveness_a_wedged_or_dead_one(
    start_simulator: StartSimulator,
    make_client: MakeClient,
    redis: aioredis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Trimming fails, then blocks: /readyz goes 503 naming the loop and its last error,
    /healthz goes 503 once it is wedged; both recover when it completes again. A loop
    whose task ends makes /healthz fail."""
    sim = await start_simulator(users=20, courses=2)
    timing = Timing(
        idle_s=0.05, trim_interval_s=0.05, stats_interval_s=0.1, stall_floor_s=1.0,
        wedge_floor_s=3.0, discovery_interval_s=30.0, grace_s=1.0,
    )  # fmt: skip
    sink = FileSink("audit", tmp_path / "audit.jsonl")
    bridge = make_bridge(make_client(sim.url), redis, sim, [sink], timing=timing)
    release = asyncio.Event()
    calls: list[int] = []
    original = bridge.store.trim_outbox

    async def trim(**options: Any) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("trim exploded")
        if len(calls) == 2:
            await release.wait()
        return await original(**options)

    server, port = await health.serve(bridge.readiness, "127.0.0.1", 0, liveness=bridge.liveness)
    base = f"http://127.0.0.1:{port}"
    try:
        await bridge.start()
        await until(lambda: _ready(bridge), "the bridge to be ready")
        monkeypatch.setattr(bridge.store, "trim_outbox", trim)
        await until(lambda: _true(not bridge.readiness()[0]), "readiness to see the stall")
        status, body = await _get(f"{base}/readyz")
        assert status == 503
        assert "trim exploded" in body["checks"]["loop:trim"]
        assert "trim" in body["checks"]["loops"]
        await until(lambda: _status(f"{base}/healthz", 503), "liveness to see the wedge")
        _, body = await _get(f"{base}/healthz")
        assert body["checks"]["loop:trim"].startswith("wedged")
        release.set()
        await until(lambda: _ready(bridge), "readiness once trimming completes again")
        assert (await _get(f"{base}/healthz"))[0] == 200
        with structlog.testing.capture_logs() as logs:
            task = bridge.loops.loops["feed:audit"].task
            assert task is not None
            task.cancel()
            await until(lambda: _status(f"{base}/healthz", 503), "liveness to see the death")
        _, body = await _get(f"{base}/healthz")
        assert body["checks"]["loop:feed:audit"] == "ended (cancelled)"
        assert [e for e in logs if e["event"] == "loop.dead" and e["loop"] == "feed:audit"]
    finally:
        release.set()
        await bridge.stop()
        await server.cleanup()
    assert bridge.liveness()[0], "a stopping bridge's ended loops are no deaths"


async def _ready(bridge: Bridge) -> bool:
    return bridge.readiness()[0]


async def _get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as reply:
        text = await reply.text()
        return reply.status, (json.loads(text) if text.startswith("{") else {})


async def _status(url: str, want: int) -> bool:
    return (await _get(url))[0] == want


async def test_a_scope_sweep_that_hangs_makes_the_bridge_not_ready(
    start_simulator: StartSimulator,
    make_client: MakeClient,
    redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One course's sweep hangs while the scheduler goes on: readiness names that course
    once it has run past `sweep_stall_s`, and is back once the sweep ends."""
    sim = await start_simulator(users=20, courses=2)
    timing = dataclasses.replace(FAST, sweep_stall_s=0.5)
    bridge = make_bridge(make_client(sim.url), redis, sim, [], timing=timing)
    release = asyncio.Event()
    original = bridge.sweeper.sweep
    hung: list[str] = []

    async def sweep(scope: Any, token: str, *, full: bool = False) -> Any:
        if not hung or hung[0] == scope.key:
            hung[:] = [scope.key]
            await release.wait()
        return await original(scope, token, full=full)

    monkeypatch.setattr(bridge.sweeper, "sweep", sweep)
    try:
        await bridge.start()
        await until(lambda: _true("sweeps" in bridge.readiness()[1]), "the hung sweep to show")
        assert f"courses/{hung[0]}" in bridge.readiness()[1]["sweeps"]
        assert "loop:schedule" not in bridge.readiness()[1]
        release.set()
        await until(lambda: _ready(bridge), "readiness once the sweep ends")
    finally:
        release.set()
        await bridge.stop()
