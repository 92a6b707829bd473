"""Events for the xapi tests, made by the real diff and event code from Absorb-shaped records.

Each `Enrollment` has fresh GUIDs, so its statements are the only ones an LRS
holds under its registration, however many tests share that LRS.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge import drill_downs, events, samples
from bridge.absorb.models import Status
from bridge.diff import ChangeKind, diff, removed
from bridge.drill_downs import DrillDown
from bridge.feeds import observe
from bridge.sinks.base import Delivery
from bridge.snapshots import Kind

SOURCE = "https://acme.myabsorb.com"
AT = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def _guid() -> str:
    return str(uuid.uuid4())


@dataclass
class Enrollment:
    """A learner's course enrollment (and one lesson of it), with fresh ids."""

    enrollment_id: str = field(default_factory=_guid)
    course_id: str = field(default_factory=_guid)
    user_id: str = field(default_factory=_guid)
    lesson_enrollment_id: str = field(default_factory=_guid)
    lesson_id: str = field(default_factory=_guid)
    attempt_id: str = field(default_factory=_guid)

    def record(
        self, kind: Kind, status: Status, *, at: datetime = AT, **fields: Any
    ) -> dict[str, Any]:
        """The record Absorb would return, with this enrollment's ids and `fields` on top."""
        raw = samples.record(kind, at, status=status, progress=_progress(status))
        if kind == Kind.attempt:  # Absorb's attempts name no learner, lesson or course
            return {**raw, "id": self.attempt_id, **fields}
        raw["userId"] = self.user_id
        if kind == Kind.course_enrollment:
            raw.update(id=self.enrollment_id, courseId=self.course_id)
        else:
            raw.update(
                id=self.lesson_enrollment_id,
                courseEnrollmentId=self.enrollment_id,
                lessonId=self.lesson_id,
            )
        return {**raw, **fields}

    def event(
        self,
        change: ChangeKind,
        status: Status,
        *,
        kind: Kind = Kind.course_enrollment,
        before: Status = Status.InProgress,
        at: datetime = AT,
        **fields: Any,
    ) -> dict[str, Any]:
        """The CloudEvent of `change` to `status` (from `before`), as the bridge emits it."""
        earlier = at - timedelta(hours=1)
        previous_raw = self.record(kind, before, at=earlier)
        previous = observe(kind, previous_raw, course_id=self.course_id).snapshot()
        if change == "removed":
            subject = previous_raw["id"]
            return events.cloud_event(SOURCE, removed(kind, subject, previous))
        raw = self.record(kind, status, at=at, **fields)
        seen = observe(kind, raw, course_id=self.course_id, parent=self.parent(kind, at))
        found = diff(
            None if change == "created" else previous,
            seen,
            emit_created=True,
            progress_events=True,
        ).changes
        assert [c.change for c in found] == [change], found
        return events.cloud_event(SOURCE, found[0])

    def parent(self, kind: Kind, at: datetime = AT) -> dict[str, str] | None:
        """`data.parent` of a record of `kind` a drill-down of this enrollment found."""
        if kind in (Kind.course_enrollment, Kind.session_enrollment):
            return None
        task = DrillDown(self.enrollment_id, self.user_id, self.course_id, None, at)
        if kind != Kind.attempt:
            return drill_downs.parent_of(task)
        lesson = self.record(Kind.lesson_enrollment, Status.InProgress, at=at)
        return drill_downs.parent_of(task, observe(Kind.lesson_enrollment, lesson))

    def delivery(self, event: dict[str, Any]) -> Delivery:
        """The event as a sink receives it."""
        return Delivery(event, events.encode(event).decode(), "courses", self.course_id)


def _progress(status: Status) -> float:
    return 100.0 if status == Status.Complete else 50.0
