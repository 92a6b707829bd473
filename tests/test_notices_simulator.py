"""The simulator's Absorb-style webhooks, received by the bridge's own listener: signed,
announced by kind and status, with the share, delay, loss and duplicates asked for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bridge.absorb.models import Status
from bridge.notices import NoticeListener
from bridge.notices.counts import NoticeCounts
from bridge.notices.listener import Notice
from tests.conftest import SimHandle

SECRET = "sim-webhook-secret"


@pytest.fixture
async def listener(redis: aioredis.Redis) -> AsyncIterator[NoticeListener]:
    """The bridge's notice listener on a free port, as the simulator's webhook receiver."""
    made = NoticeListener(secret=SECRET, path="/hooks", counts=NoticeCounts(redis, "simhooks"))
    await made.start("127.0.0.1", 0)
    yield made
    await made.stop()


async def configure(sim: SimHandle, listener: NoticeListener, **settings: object) -> None:
    """Point the simulator's webhooks at the listener with these settings."""
    url = f"http://127.0.0.1:{listener.port}/hooks"
    await sim.control("PUT", "webhooks", {"url": url, "secret": SECRET, **settings})


async def change(sim: SimHandle, status: Status, count: int = 1) -> list[str]:
    """Set `count` active enrollments (not already in `status`) to `status`; their ids."""
    ids = [
        rid
        for rid, ce in sim.sim.tenant.enrollments.items()
        if ce.is_active and ce.status != status
    ][:count]
    for rid in ids:
        await sim.control("PATCH", f"records/{rid}", {"set": {"status": int(status)}})
    return ids


async def received(listener: NoticeListener, count: int, timeout_s: float = 5) -> list[Notice]:
    """Wait for `count` notices at the listener (failing if they do not come) and take them."""
    deadline = time.monotonic() + timeout_s
    while listener.queue.qsize() < count:
        assert time.monotonic() < deadline, f"{listener.queue.qsize()} of {count} notices came"
        await asyncio.sleep(0.02)
    return [listener.queue.get_nowait() for _ in range(listener.queue.qsize())]


async def test_changes_are_announced_signed_in_every_shape(
    simulator: SimHandle, listener: NoticeListener
) -> None:
    """Each status change is posted once, signed so that the listener takes it, in the shapes
    asked for, in turn; GET shows the counts and never the secret."""
    shapes = ["course", "user", "enrollment", "nested", "array", "odd_case", "nothing"]
    await configure(simulator, listener, shapes=shapes)
    ids = await change(simulator, Status.Complete, count=7)
    bodies = [n.body for n in await received(listener, 7)]
    ce = simulator.sim.tenant.enrollments[ids[0]]
    assert bodies[0] == {
        "eventName": "EnrollmentCompletedbyAdmin", "courseId": ce.course.id, "userId": ce.user.id,
    }  # fmt: skip
    assert list(bodies[1]) == ["eventName", "userId"]
    assert bodies[2]["enrollmentId"] == ids[2]
    assert [next(k for k in b if k in ("Data", "items", "Course.Id")) for b in bodies[3:6]] == [
        "Data",
        "items",
        "Course.Id",
    ]
    assert "ids" in bodies[6]
    state = await simulator.control("GET", "webhooks")
    assert (state["announced"], state["sent"], state["failed"]) == (7, 7, 0)
    assert state["secret"] == "***"


async def test_share_loss_duplicates_and_statuses_are_honoured(
    simulator: SimHandle, listener: NoticeListener
) -> None:
    """share 0 announces nothing; loss 1 announces but sends nothing; duplicates 1 sends each
    twice; statuses announces only changes to those statuses."""
    await configure(simulator, listener, share=0.0)
    await change(simulator, Status.Failed)
    await configure(simulator, listener, share=1.0, loss=1.0)
    await change(simulator, Status.Complete)
    await asyncio.sleep(0.3)
    assert listener.queue.empty()
    state = await simulator.control("GET", "webhooks")
    assert (state["announced"], state["lost"], state["sent"]) == (1, 1, 0)

    await configure(simulator, listener, loss=0.0, duplicates=1.0)
    (rid,) = await change(simulator, Status.InProgress)
    bodies = [n.body for n in await received(listener, 2)]
    assert bodies[0] == bodies[1]
    assert bodies[0]["courseId"] == simulator.sim.tenant.enrollments[rid].course.id

    await configure(simulator, listener, duplicates=0.0, statuses=[int(Status.Complete)])
    await change(simulator, Status.NotComplete)
    await change(simulator, Status.Complete)
    assert len(await received(listener, 1)) == 1
    await asyncio.sleep(0.3)
    assert listener.queue.empty()


async def test_a_delay_holds_notices_back_without_holding_the_api(
    simulator: SimHandle, listener: NoticeListener
) -> None:
    """With delay_s a notice arrives no sooner than that after its change, while the
    simulator's API answers at once meanwhile; url null stops announcing."""
    await configure(simulator, listener, delay_s=0.6)
    started = time.monotonic()
    await change(simulator, Status.Complete)
    await simulator.control("GET", "state")
    assert time.monotonic() - started < 0.5
    await received(listener, 1)
    assert time.monotonic() - started >= 0.6
    await simulator.control("PUT", "webhooks", {"url": None})
    await change(simulator, Status.Failed)
    await asyncio.sleep(0.8)
    assert listener.queue.empty()
