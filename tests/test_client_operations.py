"""Every Absorb operation through the client, against the simulator over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.absorb.client import AbsorbClient
from bridge.absorb.models import (
    AttemptStatus,
    CourseEnrollmentUpdate,
    FinishAttempt,
    Status,
)
from bridge.absorb.paths import Op
from bridge.absorb.transport import AbsorbTransport, Credentials
from bridge.errors import AbsorbRequestError
from tests.conftest import API_KEY, FAST_RETRY, PASSWORD, USERNAME, SimHandle


class RecordingTransport(AbsorbTransport):
    """A real transport that also notes which operations went over the wire."""

    seen: frozenset[Op] = frozenset()

    async def request(self, op: Op, **kwargs: Any) -> Any:
        self.seen |= {op}
        return await super().request(op, **kwargs)


async def _tenant(sim: SimHandle) -> dict[str, Any]:
    tenant: dict[str, Any] = await sim.control("GET", "tenant")
    return tenant


def _online(tenant: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in tenant["courses"] if c["courseType"] == "OnlineCourse")


def _ilc(tenant: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in tenant["courses"] if c["courseType"] == "InstructorLedCourse")


async def test_every_operation_is_served_and_typed(simulator: SimHandle) -> None:
    """A scenario that calls all 26 enrollment operations plus courses, each reply typed."""
    transport = RecordingTransport(
        simulator.url, Credentials(API_KEY, USERNAME, PASSWORD), retry=FAST_RETRY
    )
    async with AbsorbClient(transport) as client:
        await _every_operation(client, simulator)
    assert transport.seen == set(Op) - {Op.AUTHENTICATE}
    assert (await simulator.state())["logins"] == 1


async def _every_operation(client: AbsorbClient, simulator: SimHandle) -> None:
    tenant = await _tenant(simulator)
    online, ilc = _online(tenant), _ilc(tenant)
    learner = tenant["users"][1]

    courses = [c async for c in client.list_courses()]
    assert {c.id for c in courses} == {c["id"] for c in tenant["courses"]}

    # Course enrollments: create, read every way, update, list, bulk.
    created = await client.create_enrollment(learner, online["id"])
    assert created.course_id == online["id"]
    assert created.user_id == learner
    by_id = await client.get_course_enrollment(created.enrollment_id)
    by_user = await client.get_user_course_enrollment(learner, online["id"])
    assert by_id.id == by_user.id == created.enrollment_id
    assert by_id.is_active is True
    listed = [e async for e in client.list_course_enrollments(online["id"])]
    assert created.enrollment_id in {e.id for e in listed}
    mine = [e async for e in client.list_user_course_enrollments(learner)]
    assert created.enrollment_id in {e.id for e in mine}
    bulk = await client.list_bulk_course_enrollments([learner], [online["id"], ilc["id"]])
    assert created.enrollment_id in {e.id for e in bulk}

    # Lessons and chapters of the new enrollment.
    lessons = await client.list_user_lesson_enrollments(learner, online["id"])
    chapters = await client.list_chapter_enrollments(learner, online["id"])
    first_chapter = online["chapters"][0]
    assert len(lessons) == sum(len(ch["lessons"]) for ch in online["chapters"])
    assert {ch.chapter_id for ch in chapters} == {ch["id"] for ch in online["chapters"]}
    chapter = await client.get_chapter_enrollment(learner, online["id"], first_chapter["id"])
    assert chapter.status == Status.NotStarted
    in_chapter = await client.list_user_chapter_lesson_enrollments(
        learner, online["id"], first_chapter["id"]
    )
    assert {le.lesson_id for le in in_chapter} == set(first_chapter["lessons"])
    lesson_id = first_chapter["lessons"][0]
    lesson = await client.get_user_lesson_enrollment(learner, online["id"], lesson_id)
    same = await client.get_lesson_enrollment_in_chapter(
        learner, online["id"], first_chapter["id"], lesson_id
    )
    assert lesson.id == same.id
    everyone = [le async for le in client.list_lesson_enrollments(online["id"], lesson_id)]
    assert lesson.id in {le.id for le in everyone}

    # Attempts: start, list, finish both ways.
    started = await client.start_attempt(learner, online["id"], lesson_id)
    attempts = await client.list_lesson_attempts(learner, online["id"], lesson_id)
    assert [a.id for a in attempts] == [started.attempt_id]
    assert attempts[0].status == AttemptStatus.InProgress
    await client.finish_attempt(
        started.attempt_id, FinishAttempt(status=AttemptStatus.Failed, score=40)
    )
    again = await client.start_attempt(learner, online["id"], lesson_id)
    await client.finish_user_lesson_attempt(
        learner,
        online["id"],
        lesson_id,
        again.attempt_id,
        FinishAttempt(status=AttemptStatus.Complete, score=90),
    )
    lesson = await client.get_user_lesson_enrollment(learner, online["id"], lesson_id)
    assert (lesson.status, lesson.attempts, lesson.failures, lesson.score) == (
        Status.Complete,
        2,
        1,
        90,
    )

    # Admin update, then un-enroll.
    update = CourseEnrollmentUpdate(course_id=online["id"], status=Status.Complete, score=88.5)
    await client.create_or_update_course_enrollment(learner, update)
    done = await client.get_course_enrollment(created.enrollment_id)
    assert (done.status, done.score, done.progress) == (Status.Complete, 88.5, 100.0)
    assert done.date_completed is not None
    await client.unenroll([created.enrollment_id])
    with pytest.raises(AbsorbRequestError) as gone:
        await client.get_course_enrollment(created.enrollment_id)
    assert gone.value.status == 404

    # Instructor-led sessions.
    session_id = ilc["sessions"][0]
    ilc_created = await client.create_ilc_enrollment(learner, ilc["id"], session_id)
    assert ilc_created.session_enrollment_id is not None
    sessions = await client.list_user_session_enrollments(learner, ilc["id"])
    assert [s.id for s in sessions] == [ilc_created.session_enrollment_id]
    one = await client.get_user_session_enrollment(learner, ilc["id"], session_id)
    assert one.session_id == session_id
    roster = [s async for s in client.list_session_enrollments(ilc["id"], session_id)]
    assert one.id in {s.id for s in roster}

    # The authenticated admin's own enrollments.
    my = await client.create_my_course_enrollment(online["id"])
    assert my.user_id == tenant["admin"]
    assert (await client.get_my_course_enrollment(online["id"])).id == my.enrollment_id
    assert my.enrollment_id in {e.id async for e in client.list_my_course_enrollments()}


async def test_re_enrollment_turns_the_old_enrollment_historical(
    client: AbsorbClient, simulator: SimHandle
) -> None:
    """reEnroll creates a new enrollment id; the old one stays listed with isActive false."""
    tenant = await _tenant(simulator)
    course, learner = _online(tenant)["id"], tenant["users"][2]
    first = await client.create_enrollment(learner, course)
    same = await client.create_enrollment(learner, course)
    assert same.enrollment_id == first.enrollment_id
    second = await client.create_enrollment(learner, course, re_enroll=True)
    assert second.enrollment_id != first.enrollment_id
    old = await client.get_course_enrollment(first.enrollment_id)
    new = await client.get_course_enrollment(second.enrollment_id)
    assert (old.is_active, new.is_active) == (False, True)
    assert old.date_edited is not None
    assert new.date_edited is not None
    assert old.date_edited <= new.date_edited


async def test_finishing_lessons_moves_the_course_enrollment(
    client: AbsorbClient, simulator: SimHandle
) -> None:
    """Completing every lesson completes the course; each step stamps a later dateEdited."""
    tenant = await _tenant(simulator)
    course = _online(tenant)
    learner = tenant["users"][3]
    created = await client.create_enrollment(learner, course["id"], re_enroll=True)
    stamps = []
    lesson_ids = [lesson for ch in course["chapters"] for lesson in ch["lessons"]]
    for n, lesson_id in enumerate(lesson_ids, start=1):
        attempt = await client.start_attempt(learner, course["id"], lesson_id)
        await client.finish_attempt(
            attempt.attempt_id, FinishAttempt(status=AttemptStatus.Complete, score=80 + n)
        )
        ce = await client.get_course_enrollment(created.enrollment_id)
        stamps.append(ce.date_edited)
        expected = Status.Complete if n == len(lesson_ids) else Status.InProgress
        assert ce.status == expected
        assert ce.progress == pytest.approx(100.0 * n / len(lesson_ids), abs=0.01)
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)


async def test_cancelling_a_session_enrollment(client: AbsorbClient, simulator: SimHandle) -> None:
    """cancelSession removes the session enrollment from the learner and the roster."""
    tenant = await _tenant(simulator)
    ilc = _ilc(tenant)
    learner, session = tenant["users"][4], ilc["sessions"][1]
    made = await client.create_ilc_enrollment(learner, ilc["id"], session)
    cancelled = await client.create_ilc_enrollment(learner, ilc["id"], session, cancel_session=True)
    assert cancelled.session_enrollment_id is None
    roster = [s.id async for s in client.list_session_enrollments(ilc["id"], session)]
    assert made.session_enrollment_id not in roster
