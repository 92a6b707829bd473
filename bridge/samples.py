"""A sample change, made by the real diff and event code: what `test-sink` sends."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bridge import events
from bridge.absorb.models import Status
from bridge.absorb.timefmt import format_rfc3339
from bridge.diff import diff
from bridge.feeds import observe
from bridge.sinks.base import Delivery
from bridge.snapshots import Kind

#: Ids that cannot be a real tenant's: receivers can tell a test event by them.
SAMPLE_ENROLLMENT_ID = "00000000-0000-4000-8000-00000000e001"
SAMPLE_COURSE_ID = "00000000-0000-4000-8000-00000000c001"
SAMPLE_USER_ID = "00000000-0000-4000-8000-00000000a001"


def course_enrollment(at: datetime, *, status: int, progress: float) -> dict[str, Any]:
    """A course enrollment as Absorb returns it, for a learner and course made up for tests."""
    done = status == Status.Complete
    return {
        "id": SAMPLE_ENROLLMENT_ID,
        "courseId": SAMPLE_COURSE_ID,
        "courseName": "absorb-bridge test course",
        "progress": progress,
        "score": 92.0 if done else None,
        "status": status,
        "dateCompleted": format_rfc3339(at) if done else None,
        "dateExpires": None,
        "dateEdited": format_rfc3339(at),
        "dateAdded": format_rfc3339(at - timedelta(days=7)),
        "fullName": "Test Learner",
        "courseVersionId": None,
        "userId": SAMPLE_USER_ID,
        "acceptedTermsAndConditions": True,
        "timeSpentTicks": 27_000_000_000,
        "timeSpent": "00:45:00",
        "dateStarted": format_rfc3339(at - timedelta(days=6)),
        "enrollmentKeyId": None,
        "certificateId": None,
        "credits": 1.0,
        "isActive": True,
        "dateDue": None,
        "accessDate": format_rfc3339(at),
        "jobTitle": "Tester",
        "courseCollectionId": None,
        "avatar": None,
    }


def status_changed(source: str, at: datetime) -> dict[str, Any]:
    """An `absorb.course_enrollment.status_changed` event (InProgress to Complete) at `at`."""
    before = observe(
        Kind.course_enrollment,
        course_enrollment(at - timedelta(hours=1), status=Status.InProgress, progress=50.0),
    )
    after = observe(
        Kind.course_enrollment, course_enrollment(at, status=Status.Complete, progress=100.0)
    )
    (change,) = diff(before.snapshot(), after, emit_created=True, progress_events=False).changes
    return events.cloud_event(source, change)


def delivery(source: str, at: datetime, feed: str) -> Delivery:
    """The sample event as a sink receives it."""
    event = status_changed(source, at)
    return Delivery(event, events.encode(event).decode(), feed, SAMPLE_COURSE_ID)
