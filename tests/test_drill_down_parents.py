"""Records found by drilling into a course enrollment say what they belong to (`data.parent`).

Absorb's attempt records carry no learner, lesson or course, and lesson and chapter
enrollments no course: the sweep, which knows whose enrollment it drilled into,
adds it beside the record, never into it.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import redis.asyncio as aioredis

from bridge import samples
from bridge.absorb.client import AbsorbClient
from bridge.absorb.models import Attempt, AttemptStatus, FinishAttempt, Status
from bridge.absorb.paths import Op
from bridge.diff import removed
from bridge.events import cloud_event
from bridge.feeds import FeedSpec, Scope, course_scope
from bridge.personal_data import PersonalData, scrub
from bridge.simulator.records import CourseEnrollmentRec
from bridge.snapshots import Kind
from bridge.xapi import Portal, statements_for
from tests.conftest import MakeClient, SimHandle, StartSimulator
from tests.engine import Engine, make_engine

FEED = FeedSpec(
    name="deep",
    resource="course_enrollments",
    details=frozenset({"lessons", "chapters", "attempts"}),
)
#: Exactly the fields of Absorb's attempt resource.
ATTEMPT_FIELDS = {f.alias or name for name, f in Attempt.model_fields.items()}


def _not_started(tenant: Any) -> CourseEnrollmentRec:
    enrollment: CourseEnrollmentRec = next(
        e for e in tenant.enrollments.values() if e.status == Status.NotStarted and e.lessons
    )
    return enrollment


async def _baselined(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> tuple[SimHandle, AbsorbClient, Engine, CourseEnrollmentRec, Scope]:
    """A simulator and an engine that has swept (baselined) a not-started enrollment's course."""
    sim = await start_simulator(users=20, ilc_ratio=0.0, approval_ratio=0.0)
    client = make_client(sim.url)
    engine = make_engine(sim, client, redis)
    enrollment = _not_started(sim.sim.tenant)
    scope = course_scope(FEED, enrollment.course.id)
    await engine.sweep(scope)
    await engine.new_events()
    return sim, client, engine, enrollment, scope


async def test_attempt_events_name_the_learner_lesson_and_course(
    start_simulator: StartSimulator,
    make_client: MakeClient,
    redis: aioredis.Redis,
    statement_schema: jsonschema.protocols.Validator,
) -> None:
    """An attempt started, then finished, gives two events whose `data.parent` names the
    learner (id and name), the course, the course enrollment, the lesson and the lesson
    enrollment; `data.current` stays exactly the record Absorb served. The xapi mapping
    makes them valid `launched`, then `completed` and `passed`, statements of that learner."""
    sim, client, engine, ce, scope = await _baselined(start_simulator, make_client, redis)
    lesson = ce.lessons[0]
    started = await client.start_attempt(ce.user.id, ce.course.id, lesson.lesson.id)
    await engine.sweep(scope)
    await client.finish_attempt(
        started.attempt_id, FinishAttempt(status=AttemptStatus.Complete, score=88)
    )
    await engine.sweep(scope)
    events = await engine.new_events()
    attempts = [e for e in events if e["subject"] == started.attempt_id]
    assert [(e["type"], e["status"]) for e in attempts] == [
        ("absorb.attempt.created", "InProgress"),
        ("absorb.attempt.status_changed", "Complete"),
    ]
    served = await client.transport.request(
        Op.LIST_LESSON_ATTEMPTS,
        ids={"user_id": ce.user.id, "course_id": ce.course.id, "lesson_id": lesson.lesson.id},
    )
    (record,) = [a for a in served if a["id"] == started.attempt_id]
    assert attempts[-1]["data"]["current"] == record
    for event in attempts:
        assert set(event["data"]["current"]) == ATTEMPT_FIELDS
        assert event["data"]["parent"] == {
            "userId": ce.user.id,
            "courseId": ce.course.id,
            "courseEnrollmentId": ce.id,
            "lessonId": lesson.lesson.id,
            "lessonEnrollmentId": lesson.id,
            "fullName": ce.user.full_name,
        }
    made = [statements_for(e, ce.course.id, Portal(sim.url)) for e in attempts]
    assert [[s["verb"]["id"].rsplit("/", 1)[1] for s in m] for m in made] == [
        ["launched"],
        ["completed", "passed"],
    ]
    for statement in made[0] + made[1]:
        statement_schema.validate(statement)
        assert statement["actor"]["account"]["name"] == ce.user.id
        assert statement["context"]["registration"] == ce.id


async def test_lesson_and_chapter_events_name_their_course(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """Lesson and chapter enrollment events from a drill-down carry the learner, the course
    and the course enrollment in `data.parent` (their records name no course); the course
    enrollment's own events carry no parent."""
    _, client, engine, ce, scope = await _baselined(start_simulator, make_client, redis)
    lesson = ce.lessons[0]
    await client.start_attempt(ce.user.id, ce.course.id, lesson.lesson.id)
    await engine.sweep(scope)
    events = {e["subject"]: e for e in await engine.new_events()}
    expected = {"userId": ce.user.id, "courseId": ce.course.id, "courseEnrollmentId": ce.id}
    assert events[lesson.id]["type"].startswith("absorb.lesson_enrollment.")
    assert events[lesson.id]["data"]["parent"] == expected
    chapter = lesson.chapter_enrollment.id
    assert events[chapter]["type"].startswith("absorb.chapter_enrollment.")
    assert events[chapter]["data"]["parent"] == expected
    assert "parent" not in events[ce.id]["data"]


async def test_a_drill_down_tried_again_later_still_names_the_parent(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """A drill-down that failed is kept pending in quarantine and tried on a later sweep
    from what was kept there: its attempt events carry the same `data.parent`."""
    sim, client, engine, ce, scope = await _baselined(start_simulator, make_client, redis)
    await sim.control("PATCH", f"records/{ce.id}", {"drill_down": "404"})
    lesson = ce.lessons[0]
    started = await client.start_attempt(ce.user.id, ce.course.id, lesson.lesson.id)
    await engine.sweep(scope)
    assert [e["subject"] for e in await engine.new_events()] == [ce.id]
    assert list(await engine.store.quarantined(FEED.name)) == [f"{scope.key}|drill-down:{ce.id}"]
    await sim.control("PATCH", f"records/{ce.id}", {"drill_down": None})
    await engine.sweep(scope)
    (attempt,) = [e for e in await engine.new_events() if e["subject"] == started.attempt_id]
    assert attempt["data"]["parent"] == {
        "userId": ce.user.id,
        "courseId": ce.course.id,
        "courseEnrollmentId": ce.id,
        "lessonId": lesson.lesson.id,
        "lessonEnrollmentId": lesson.id,
        "fullName": ce.user.full_name,
    }


async def test_the_simulator_serves_attempts_with_absorbs_fields_only(
    start_simulator: StartSimulator, make_client: MakeClient
) -> None:
    """Over HTTP, an attempt has exactly Absorb's fields: no learner, lesson or course."""
    sim = await start_simulator(users=10, ilc_ratio=0.0, approval_ratio=0.0)
    client = make_client(sim.url)
    ce = _not_started(sim.sim.tenant)
    lesson = ce.lessons[0]
    await client.start_attempt(ce.user.id, ce.course.id, lesson.lesson.id)
    served = await client.transport.request(
        Op.LIST_LESSON_ATTEMPTS,
        ids={"user_id": ce.user.id, "course_id": ce.course.id, "lesson_id": lesson.lesson.id},
    )
    assert len(served) == 1
    assert set(served[0]) == ATTEMPT_FIELDS


def test_the_parent_leaves_the_event_id_alone() -> None:
    """An event's id comes from the change, not from `data.parent`: the same change with
    and without a parent has one id, so events queued before the parent existed match."""
    change = samples.change(Kind.attempt, "status_changed", samples.EXAMPLE_TIME)
    assert change.current is not None
    assert change.current.parent is not None
    bare = change._replace(current=change.current._replace(parent=None))
    with_parent, without = cloud_event("s", change), cloud_event("s", bare)
    assert "parent" in with_parent["data"]
    assert "parent" not in without["data"]
    assert with_parent["id"] == without["id"]
    assert with_parent["data"]["current"] == without["data"]["current"]


def test_removed_events_carry_no_parent() -> None:
    """A removal is found from a snapshot, which keeps no parent: `data.parent` is left out."""
    before = samples.change(Kind.attempt, "created", samples.EXAMPLE_TIME)
    assert before.current is not None
    event = cloud_event("s", removed(Kind.attempt, before.subject, before.current.snapshot()))
    assert "parent" not in event["data"]


def test_personal_data_applies_to_the_parent() -> None:
    """A sink that drops `fullName` and hashes `userId` gets neither from `data.parent`."""
    event = samples.examples()["absorb.attempt.status_changed"]
    policy = PersonalData(drop=frozenset({"fullName"}), hash=frozenset({"userId"}))
    parent = scrub(event, policy)["data"]["parent"]
    assert "fullName" not in parent
    assert parent["userId"].startswith("sha256:")
    assert parent["courseId"] == event["data"]["parent"]["courseId"]
    assert event["data"]["parent"]["fullName"] == "Test Learner", "the original is unchanged"
