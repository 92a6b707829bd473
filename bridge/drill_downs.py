"""Drill-downs: what their records belong to, and those still to read.

A drill-down whose replies fail (not an array, an empty body, a 404 for a user or
lesson deleted meanwhile) is kept in the feed's quarantine under
`<scope>|drill-down:<enrollment id>`, with the error, so an operator sees it and the
scope's next sweeps try it again. Pure functions: the sweep reads and writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from bridge import clock
from bridge.absorb.models import parse_timestamp
from bridge.absorb.timefmt import format_rfc3339
from bridge.diff import Observation

#: Between the scope key and the enrollment id in a pending drill-down's quarantine key.
MARK = "drill-down:"


@dataclass(frozen=True)
class DrillDown:
    """A course enrollment's drill-down: whose, and since when its details are new."""

    parent_id: str
    user_id: str
    course_id: str
    #: The enrollment's `dateEdited` when it was last drilled into (None: never).
    since: datetime | None
    #: Its `dateEdited` now: the event time of details that carry none.
    time: datetime | None


def parent_of(task: DrillDown, lesson: Observation | None = None) -> dict[str, str]:
    """What a record found by drilling into `task` belongs to: the `data.parent` of its events.

    Lesson and chapter enrollment records name no course, and attempt records name
    nothing at all, so the drill-down, which knows, says it: the learner, the course
    and its enrollment; for the attempts of `lesson` (a lesson enrollment) also the
    lesson, its enrollment, and the learner's `fullName` when that record carries one.
    Enrollment ids are spelled as the subjects of their own events.
    """
    parent = {
        "userId": task.user_id,
        "courseId": task.course_id,
        "courseEnrollmentId": task.parent_id,
    }
    if lesson is not None:
        if isinstance(lesson_id := lesson.raw.get("lessonId"), str):
            parent["lessonId"] = lesson_id
        parent["lessonEnrollmentId"] = lesson.id
        if isinstance(name := lesson.raw.get("fullName"), str):
            parent["fullName"] = name
    return parent


def quarantine_key(scope_key: str, parent_id: str) -> str:
    """Where a pending drill-down is kept in the feed's quarantine hash."""
    return f"{scope_key}|{MARK}{parent_id}"


def entry(task: DrillDown, error: str, scope_key: str) -> str:
    """The quarantine entry of a pending drill-down (the shape of a record's, `kind` apart)."""
    pending = {
        "id": task.parent_id,
        "userId": task.user_id,
        "courseId": task.course_id,
        "since": format_rfc3339(task.since) if task.since else None,
        "time": format_rfc3339(task.time) if task.time else None,
    }
    return json.dumps(
        {
            "scope": scope_key,
            "kind": "drill_down",
            "raw": json.dumps(pending),
            "error": f"drill-down pending, tried again on the next sweep: {error}",
            "at": format_rfc3339(clock.now()),
        }
    )


def pending(quarantined: dict[str, str], scope_key: str) -> dict[str, DrillDown]:
    """The drill-downs a scope left pending, by enrollment id, read back from quarantine."""
    prefix = quarantine_key(scope_key, "")
    found: dict[str, DrillDown] = {}
    for key, value in quarantined.items():
        if not key.startswith(prefix):
            continue
        try:
            fields = json.loads(json.loads(value)["raw"])
            task = DrillDown(
                parent_id=fields["id"],
                user_id=fields["userId"],
                course_id=fields["courseId"],
                since=_moment(fields.get("since")),
                time=_moment(fields.get("time")),
            )
        except (ValueError, KeyError, TypeError):
            continue  # not written by this version: the next change drills down again
        found[task.parent_id] = task
    return found


def _moment(text: str | None) -> datetime | None:
    return parse_timestamp(text) if text else None
