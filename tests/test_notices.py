"""Absorb's webhooks as hints: the listener verifies and answers, notices name scopes, a
notice only ever makes the bridge sweep sooner."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.absorb.client import AbsorbClient
from bridge.absorb.models import Status
from bridge.feeds import FeedSpec
from bridge.notices import find_named, sign
from bridge.notices.listener import Notice
from bridge.store import Store
from tests.conftest import API_KEY, PASSWORD, USERNAME, MakeClient, SimHandle, until
from tests.notices_helpers import (
    QUIET,
    SECRET,
    TIMING,
    CountingBridge,
    Hooked,
    hooked_bridge,
)

COURSE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
USER = "0b6a3a9e-2f1c-4a55-9a1e-6c0f4e1d2b77"
ENROLLMENT = "9d2c1f0e-8b7a-4c6d-9e5f-1a2b3c4d5e6f"


@pytest.fixture
async def hooked(
    simulator: SimHandle, client: AbsorbClient, redis: aioredis.Redis
) -> AsyncIterator[Hooked]:
    """A baselined bridge (not running its loops) with its listener up."""
    async with aiohttp.ClientSession() as http:
        made = await hooked_bridge(simulator, client, redis, http)
        yield made
        await made.listener.stop()
        await made.bridge.stop()


async def resolve_all(hooked: Hooked) -> None:
    """Resolve every notice the listener has queued."""
    while await hooked.bridge.notices.resolve_once(wait_s=0.01):  # type: ignore[union-attr]
        pass


async def schedule_round(hooked: Hooked | CountingBridge) -> None:
    """One round of the scheduler, waiting for the sweeps it started."""
    bridge = hooked.bridge if isinstance(hooked, Hooked) else hooked
    await bridge.scheduler.step()
    while bridge.scheduler.running:
        await bridge.scheduler.step()


async def test_the_listener_answers_each_signature_and_body_correctly(hooked: Hooked) -> None:
    """A good signature gets 202 (upper-case hex too); a wrong or missing one 401; a body over
    the cap 413; a signed body that is not JSON 400; each is counted by outcome and reason."""
    body = json.dumps({"courseId": COURSE}).encode()
    assert await hooked.post(body) == 202
    assert await hooked.post(body, sign(body, SECRET).upper()) == 202
    assert await hooked.post(body, sign(body, "another secret")) == 401
    assert await hooked.post(body, sign(body + b" ", SECRET)) == 401
    assert await hooked.post(body, "sha256=" + sign(body, SECRET)) == 401
    assert await hooked.post(body, None) == 401
    huge = json.dumps({"courseId": COURSE, "pad": "x" * hooked.listener.max_body_bytes}).encode()
    assert await hooked.post(huge) == 413
    assert await hooked.post(b"{not json") == 400
    async with hooked.http.get(hooked.url) as resp:
        assert resp.status == 405
    counts = await hooked.counts()
    assert counts["received"] == 2
    assert counts["refused_by_reason"] == {
        "signature": 4,
        "too_large": 1,
        "not_json": 1,
        "busy": 0,
    }


async def test_a_full_queue_answers_503_so_absorb_may_come_back(hooked: Hooked) -> None:
    """Beyond the queue's bound a notice is refused with 503 and Retry-After, never dropped
    silently; once the resolver catches up notices are taken again."""
    queue = hooked.listener.queue
    while not queue.full():
        queue.put_nowait(Notice({"courseId": COURSE}, 0.0))
    async with hooked.http.post(
        hooked.url, data=b"{}", headers={"absorb-signature": sign(b"{}", SECRET)}
    ) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"]
    await resolve_all(hooked)
    assert await hooked.notice({"courseId": COURSE}) == 202
    assert (await hooked.counts())["refused_by_reason"]["busy"] == 1


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"courseId": COURSE}, ([COURSE], [], [])),
        ({"CourseId": COURSE.upper(), "UserId": USER}, ([COURSE], [USER], [])),
        ({"course_id": COURSE, "user_id": USER}, ([COURSE], [USER], [])),
        ({"Course.Id": COURSE}, ([COURSE], [], [])),
        ({"data": {"Course": {"Id": COURSE}, "user": {"id": USER}}}, ([COURSE], [USER], [])),
        ({"items": [{"enrollmentId": ENROLLMENT}, {"courseIds": [COURSE]}]},
         ([COURSE], [], [ENROLLMENT])),
        ({"enrollment": {"id": ENROLLMENT, "courseId": COURSE}}, ([COURSE], [], [ENROLLMENT])),
        ({"id": COURSE, "ids": [USER], "courseId": "not-a-guid", "name": "x"}, ([], [], [])),
        ([{"userId": USER}], ([], [USER], [])),
    ],
)  # fmt: skip
def test_ids_are_found_under_any_key_style_nesting_and_array(
    body: Any, named: tuple[list[str], list[str], list[str]]
) -> None:
    """Course, user and enrollment GUIDs are found in any case and style of key, nested and
    in arrays; an id under a key that names nothing, or a value that is no GUID, is not."""
    found = find_named(body)
    assert (found.courses, found.users, found.enrollments) == named


async def change_status(sim: SimHandle, rid: str, status: Status) -> None:
    """Change an enrollment's status in the simulator, as a learner or admin would."""
    await sim.control("PATCH", f"records/{rid}", {"set": {"status": int(status)}})


@pytest.mark.parametrize("shape", ["course", "user", "enrollment", "nested", "array", "odd_case"])
async def test_every_body_shape_sweeps_the_changed_course(hooked: Hooked, shape: str) -> None:
    """The simulator announces a change in each body shape; the notice makes the bridge sweep
    that change's course (a user-only one by looking up the user's edited enrollments), and
    the change's event comes from that sweep."""
    sim = hooked.sim
    await sim.control("PUT", "webhooks", {"url": hooked.url, "secret": SECRET, "shapes": [shape]})
    rid = hooked.pick(status_not=Status.Complete)
    course = hooked.course_of(rid)
    await change_status(sim, rid, Status.Complete)
    await until(lambda: _used(hooked, 1), f"the {shape} notice to be resolved", 10)
    await schedule_round(hooked)
    assert hooked.bridge.swept[f"course:{course}"] == 1
    events = await hooked.new_events()
    assert [(e["subject"], e["status"]) for e in events] == [(rid, "Complete")]


async def _used(hooked: Hooked, count: int) -> bool:
    await resolve_all(hooked)
    return (await hooked.counts())["used"] >= count


async def test_a_notice_naming_nothing_usable_is_counted_and_sweeps_nothing(
    hooked: Hooked,
) -> None:
    """A body with no id under a telling key, or naming an enrollment Absorb does not know,
    is counted as unusable and hints nothing."""
    sim = hooked.sim
    settings = {"url": hooked.url, "secret": SECRET, "shapes": ["nothing"]}
    await sim.control("PUT", "webhooks", settings)
    await change_status(sim, hooked.pick(status_not=Status.Complete), Status.Complete)
    assert await hooked.notice({"enrollmentId": ENROLLMENT}) == 202

    async def both_unusable() -> bool:
        await resolve_all(hooked)
        return (await hooked.counts())["unusable"] == 2

    await until(both_unusable, "both notices to be found unusable", 10)
    await schedule_round(hooked)
    assert sum(hooked.bridge.swept.values()) == 0


async def test_ten_notices_naming_one_course_give_one_sweep(hooked: Hooked) -> None:
    """Notices naming a course before its sweep coalesce into one hint: one sweep, and the
    next round sweeps nothing."""
    rid = hooked.pick()
    course = hooked.course_of(rid)
    for i in range(10):
        body = [{"courseId": course}, {"CourseId": course.upper(), "n": i}][i % 2]
        assert await hooked.notice(body) == 202
    await resolve_all(hooked)
    assert (await hooked.counts())["used"] == 10
    await schedule_round(hooked)
    await schedule_round(hooked)
    assert dict(hooked.bridge.swept) == {f"course:{course}": 1}


async def test_a_notice_alone_or_twice_never_makes_an_event(hooked: Hooked) -> None:
    """A notice about nothing that changed sweeps but emits nothing; a change announced twice
    (and announced again after it was swept) gives its event once."""
    sim = hooked.sim
    rid = hooked.pick(status_not=Status.Failed)
    course = hooked.course_of(rid)
    assert await hooked.notice({"courseId": course}) == 202
    await resolve_all(hooked)
    await schedule_round(hooked)
    assert hooked.bridge.swept[f"course:{course}"] == 1
    assert await hooked.new_events() == []

    await sim.control("PUT", "webhooks", {"url": hooked.url, "secret": SECRET, "duplicates": 1.0})
    await change_status(sim, rid, Status.Failed)
    await until(lambda: _used(hooked, 3), "the duplicated notice to be resolved", 10)
    await schedule_round(hooked)
    assert await hooked.notice({"courseId": course}) == 202  # late, after its sweep
    await resolve_all(hooked)
    await schedule_round(hooked)
    events = await hooked.new_events()
    assert [(e["subject"], e["status"]) for e in events] == [(rid, "Failed")]
    assert hooked.bridge.swept[f"course:{course}"] == 3


async def test_status_shows_notices_by_outcome_without_the_secret(
    hooked: Hooked, redis_url: str, tmp_path: Path
) -> None:
    """`status` (text and --json) shows notices received, used, unusable and refused by reason,
    summed in Redis, and never the webhook's secret."""
    course = hooked.course_of(hooked.pick())
    assert await hooked.notice({"courseId": course}) == 202
    assert await hooked.notice({"nothing": "here"}) == 202
    assert await hooked.post(b"{}", sign(b"{}", "forged")) == 401
    await resolve_all(hooked)
    await hooked.listener.counts.flush()
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"""
absorb:
  base_url: {hooked.sim.url}
  api_key: {API_KEY}
  username: {USERNAME}
  password: {PASSWORD}
  webhooks:
    listen: 127.0.0.1:0
    secret: {SECRET}
redis:
  url: {redis_url}
  prefix: {hooked.bridge.store.prefix}
feeds:
  - name: courses
    resource: course_enrollments
"""
    )
    status = [sys.executable, "-m", "bridge", "status", "--config", str(config)]
    as_json = await _output(*status, "--json")
    counts = json.loads(as_json)["notices"]
    assert (counts["received"], counts["used"], counts["unusable"], counts["refused"]) == (
        2,
        1,
        1,
        1,
    )
    assert counts["refused_by_reason"]["signature"] == 1
    text = await _output(*status)
    assert "notices (Absorb's webhooks): 2 received, 1 used, 1 unusable" in text
    assert "1 refused (1 signature)" in text
    assert SECRET not in as_json + text


async def _output(*args: str) -> str:
    """Run a command that must exit 0 and never print the secret; its stdout."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert SECRET not in err.decode()
    return out.decode()


async def test_a_hint_taken_by_one_replica_is_swept_by_another(
    hooked: Hooked, client: AbsorbClient
) -> None:
    """Hints live in Redis: the replica that takes the notice need not be the one that sweeps,
    and once one replica swept the scope the other does not sweep it again for the hint."""
    other = CountingBridge(
        client=client,
        store=Store(hooked.bridge.store.redis, hooked.bridge.store.prefix),
        feeds=[QUIET],
        sinks=[],
        routes=[],
        source=hooked.sim.url,
        timing=TIMING,
        check_redis_settings=False,
    )
    other.swept = Counter()
    await other.sweep_once()  # discovers the courses; none is due
    course = hooked.course_of(hooked.pick())
    assert await hooked.notice({"courseId": course}) == 202
    await resolve_all(hooked)
    await schedule_round(other)
    await schedule_round(hooked)
    assert dict(other.swept) == {f"course:{course}": 1}
    assert sum(hooked.bridge.swept.values()) == 0
    await other.stop()


async def test_a_flood_of_notices_is_bounded_and_does_not_starve_the_schedule(
    simulator: SimHandle, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """Notices beyond the queue's bound are refused (503); the user lookups they ask for share
    the request budget one at a time, so every scope still gets swept at its 1 s interval."""
    feed = FeedSpec(name="courses", resource="course_enrollments", interval_s=1, max_interval_s=1)
    client = make_client(simulator.url, max_requests_per_second=30)
    users = list(simulator.sim.tenant.users)
    async with aiohttp.ClientSession() as http:
        hooked = await hooked_bridge(simulator, client, redis, http, feed=feed)
        await hooked.bridge.start()
        gate = asyncio.Semaphore(50)

        async def one(n: int) -> int:
            async with gate:
                return await hooked.notice({"userId": users[n % len(users)], "n": n})

        answers = Counter(await asyncio.gather(*(one(n) for n in range(1100))))
        hooked.bridge.swept.clear()
        await asyncio.sleep(4)
        swept = dict(hooked.bridge.swept)
        pending = hooked.listener.queue.qsize()
        await hooked.listener.stop()
        await hooked.bridge.stop()
    assert answers[503] >= 1
    assert answers[202] + answers[503] == 1100
    assert pending > 0, "the flood was over before the check: it proves nothing"
    assert len(swept) == len(simulator.sim.tenant.courses)
    assert min(swept.values()) >= 2, swept
