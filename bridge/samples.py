"""Sample records and the events the real diff and event code make of them.

`test-sink` sends one; `docs/events.md` shows one of every event type. The ids
cannot be a real tenant's, so a receiver can tell a sample by them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from bridge import drill_downs, events
from bridge.absorb.models import Status
from bridge.absorb.timefmt import format_rfc3339
from bridge.diff import Change, ChangeKind, diff, removed
from bridge.drill_downs import DrillDown
from bridge.feeds import observe
from bridge.personal_data import PersonalData, scrub
from bridge.sinks.base import Delivery
from bridge.snapshots import Kind

SAMPLE_ENROLLMENT_ID = "00000000-0000-4000-8000-00000000e001"
SAMPLE_COURSE_ID = "00000000-0000-4000-8000-00000000c001"
SAMPLE_USER_ID = "00000000-0000-4000-8000-00000000a001"
#: The moment of the documented examples, so the catalogue reads the same every time.
EXAMPLE_TIME = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
EXAMPLE_SOURCE = "https://rest.myabsorb.com"

_IDS = {
    Kind.course_enrollment: SAMPLE_ENROLLMENT_ID,
    Kind.lesson_enrollment: "00000000-0000-4000-8000-00000000e002",
    Kind.chapter_enrollment: "00000000-0000-4000-8000-00000000e003",
    Kind.session_enrollment: "00000000-0000-4000-8000-00000000e004",
    Kind.attempt: "00000000-0000-4000-8000-00000000e005",
}


def _ts(at: datetime | None) -> str | None:
    return format_rfc3339(at) if at else None


def record(kind: Kind, at: datetime, *, status: int, progress: float) -> dict[str, Any]:
    """A record of `kind` as Absorb returns it, for a learner and course made up for tests."""
    done = status == Status.Complete
    score = 92.0 if done else None
    if kind == Kind.attempt:
        return {
            "id": _IDS[kind],
            "timeSpentTicks": 9_000_000_000,
            "status": status,  # InProgress, Complete and Failed are an attempt's numbers too
            "score": score,
            "startDate": _ts(at - timedelta(minutes=15)),
            "completionDate": _ts(at) if done else None,
        }
    if kind == Kind.course_enrollment:
        return _course_enrollment(at, status, progress, score)
    activity: dict[str, Any] = {
        "id": _IDS[kind],
        "courseEnrollmentId": SAMPLE_ENROLLMENT_ID,
        "name": f"absorb-bridge test {kind.name.split('_')[0]}",
        "userId": SAMPLE_USER_ID,
        "fullName": "Test Learner",
        "status": status,
        "progress": progress,
        "score": score,
        "timeSpent": "00:15:00",
        "dateEnrolled": _ts(at - timedelta(days=7)),
        "dateStarted": _ts(at - timedelta(days=6)),
        "dateCompleted": _ts(at) if done else None,
    }
    if kind == Kind.chapter_enrollment:  # Absorb shows no dateEdited for chapters
        return {**activity, "chapterId": "00000000-0000-4000-8000-0000000000c2", "sessionId": None}
    if kind == Kind.session_enrollment:
        return {
            "dateEdited": _ts(at),
            **activity,
            "sessionId": "00000000-0000-4000-8000-0000000000d1",
        }
    return {
        "dateEdited": _ts(at),
        "dateAdded": _ts(at - timedelta(days=7)),
        **activity,
        "type": "ObjectLesson",
        "attempts": 1,
        "failures": 0,
        "lastAttempt": _ts(at),
        "lessonId": "00000000-0000-4000-8000-0000000000b1",
    }


def _course_enrollment(
    at: datetime, status: int, progress: float, score: float | None
) -> dict[str, Any]:
    return {
        "id": SAMPLE_ENROLLMENT_ID,
        "courseId": SAMPLE_COURSE_ID,
        "courseName": "absorb-bridge test course",
        "progress": progress,
        "score": score,
        "status": status,
        "dateCompleted": _ts(at) if status == Status.Complete else None,
        "dateExpires": None,
        "dateEdited": _ts(at),
        "dateAdded": _ts(at - timedelta(days=7)),
        "fullName": "Test Learner",
        "courseVersionId": None,
        "userId": SAMPLE_USER_ID,
        "acceptedTermsAndConditions": True,
        "timeSpentTicks": 27_000_000_000,
        "timeSpent": "00:45:00",
        "dateStarted": _ts(at - timedelta(days=6)),
        "enrollmentKeyId": None,
        "certificateId": None,
        "credits": 1.0,
        "isActive": True,
        "dateDue": None,
        "accessDate": _ts(at),
        "jobTitle": "Tester",
        "courseCollectionId": None,
        "avatar": None,
    }


def parent(kind: Kind, at: datetime) -> dict[str, str] | None:
    """`data.parent` of a sample record of `kind`: what a drill-down says it belongs to."""
    if kind in (Kind.course_enrollment, Kind.session_enrollment):
        return None
    task = DrillDown(SAMPLE_ENROLLMENT_ID, SAMPLE_USER_ID, SAMPLE_COURSE_ID, None, at)
    if kind != Kind.attempt:
        return drill_downs.parent_of(task)
    lesson = record(Kind.lesson_enrollment, at, status=Status.InProgress, progress=50.0)
    return drill_downs.parent_of(task, observe(Kind.lesson_enrollment, lesson))


def _observed(kind: Kind, at: datetime, status: int, progress: float) -> Any:
    raw = record(kind, at, status=status, progress=progress)
    return observe(kind, raw, course_id=SAMPLE_COURSE_ID, fallback_time=at, parent=parent(kind, at))


def change(kind: Kind, what: ChangeKind, at: datetime) -> Change:
    """A change of `kind` of the sort `what`, as diffing a sample record makes it."""
    earlier = at - timedelta(hours=1)
    before = _observed(kind, earlier, Status.InProgress, 50.0).snapshot()
    if what == "removed":
        return removed(kind, _IDS[kind], before)
    if what == "created":
        after = _observed(kind, at, Status.InProgress, 50.0)
        (made,) = diff(None, after, emit_created=True, progress_events=True).changes
        return made
    if what == "status_changed":
        after = _observed(kind, at, Status.Complete, 100.0)
    else:  # the same status, more progress (an attempt: a score)
        after = _observed(kind, at, Status.InProgress, 75.0)
        if kind == Kind.attempt:
            after = after._replace(score=40.0, raw={**after.raw, "score": 40.0})
    (made,) = diff(before, after, emit_created=True, progress_events=True).changes
    return made


def examples() -> dict[str, dict[str, Any]]:
    """One example event of every type, by type, at `EXAMPLE_TIME`."""
    found = {}
    for kind in Kind:
        for what in get_args(ChangeKind):
            event = events.cloud_event(EXAMPLE_SOURCE, change(kind, what, EXAMPLE_TIME))
            found[event["type"]] = event
    return found


def status_changed(source: str, at: datetime) -> dict[str, Any]:
    """An `absorb.course_enrollment.status_changed` event (InProgress to Complete) at `at`."""
    return events.cloud_event(source, change(Kind.course_enrollment, "status_changed", at))


def delivery(source: str, at: datetime, feed: str, policy: PersonalData) -> Delivery:
    """The sample event as a sink with this personal-data policy receives it."""
    event = scrub(status_changed(source, at), policy)
    return Delivery(event, events.encode(event).decode(), feed, SAMPLE_COURSE_ID)
