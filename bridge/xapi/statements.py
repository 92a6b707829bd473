"""Statements from one CloudEvent: the documented mapping, checked by the models. Pure.

An event whose record cannot make a valid statement raises `MappingError` naming
the field and the event: that one event fails, never the page or the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from bridge.absorb.models import parse_timestamp
from bridge.errors import BridgeError
from bridge.xapi import ids, timespan, verbs
from bridge.xapi.models import (
    Account,
    Activity,
    ActivityDefinition,
    Agent,
    Context,
    ContextActivities,
    Result,
    Score,
    Statement,
    StatementRef,
    Verb,
)

PLATFORM = "Absorb LMS"
#: Context extension: the id of the CloudEvent a statement was made from.
EVENT_ID_EXTENSION = "urn:absorb-bridge:xapi:cloudevent-id"
#: Context extension: Absorb's status name, which `abandoned` alone does not tell apart.
STATUS_EXTENSION = "urn:absorb-bridge:xapi:absorb-status"
#: Context extension of voiding statements: the resource whose enrollment was removed.
RESOURCE_EXTENSION = "urn:absorb-bridge:xapi:resource"
#: The actor of voiding statements: the bridge itself, with an account on the portal.
BRIDGE = "absorb-bridge"
#: Result extension: Absorb's progress (0..100) on `progressed` statements.
PROGRESS_EXTENSION = "https://w3id.org/xapi/cmi5/result/extensions/progress"

CMI5_COURSE = "https://w3id.org/xapi/cmi5/activitytype/course"
ADL_ACTIVITY = "http://adlnet.gov/expapi/activities/"


class MappingError(BridgeError):
    """An event that cannot become a valid statement; the message names what and where."""


@dataclass(frozen=True)
class Portal:
    """Where activity IRIs and learner accounts live, and how the learner is named.

    `home_page` is the Absorb portal's URL; `actor` picks the learner's identifier:
    `account` (the Absorb user id on the portal) or `mbox` (the record's email
    address, the account where a record carries none).
    """

    home_page: str
    actor: Literal["account", "mbox"] = "account"
    language: str = "en-US"

    def iri(self, kind: str, activity_id: str) -> str:
        """The activity IRI of an Absorb object: `<portal>/xapi/<kind>/<id>`."""
        return f"{self.home_page.rstrip('/')}/xapi/{kind}/{activity_id}"


#: resource -> (IRI path segment, activity type, the record's id field of the activity)
_OBJECTS = {
    "course_enrollment": ("course", CMI5_COURSE, "courseId"),
    "lesson_enrollment": ("lesson", ADL_ACTIVITY + "lesson", "lessonId"),
    "chapter_enrollment": ("chapter", ADL_ACTIVITY + "module", "chapterId"),
    "session_enrollment": ("session", ADL_ACTIVITY + "meeting", "sessionId"),
    "attempt": ("attempt", ADL_ACTIVITY + "attempt", "id"),
}


def statements_for(event: dict[str, Any], course_id: str, portal: Portal) -> list[dict[str, Any]]:
    """The statements of one event, as JSON-ready bodies, checked against the xAPI models.

    `course_id` is the course the event belongs to (the parent of lesson, chapter and
    session statements; an attempt's course comes from its `data.parent`, this one
    standing in only when that names none). An empty list for an event the table maps to
    no verb (a status such as PendingApproval). Raises `MappingError`.
    """
    event_id = str(event.get("id", ""))
    try:
        return [s.body() for s in _build(event, course_id, portal)]
    except MappingError:
        raise
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MappingError(
            f"event {event_id}: the statement is not valid xAPI at {where}: {first['msg']}"
        ) from None
    except (ValueError, TypeError) as e:
        raise MappingError(f"event {event_id}: {e}") from None


def _build(event: dict[str, Any], course_id: str, portal: Portal) -> list[Statement]:
    resource, change = _type(event)
    if change == "removed":
        return [_voiding(event, resource, portal)]
    data = event.get("data")
    record = data.get("current") if isinstance(data, dict) else None
    if not isinstance(record, dict):
        raise ValueError("data.current is not an object")
    status = event.get("status")
    score = _score(record.get("score"))
    chosen = verbs.for_event(resource, change, status, scored=score is not None)
    if not chosen:
        return []
    if resource == "attempt":
        parent = _attempt_parent(data)
        actor = _actor(parent, portal, "data.parent")
        context = _attempt_context(event, parent, course_id, portal)
    else:
        actor = _actor(record, portal, "data.current")
        context = _context(event, resource, record, course_id, portal)
    activity = _activity(resource, record, portal)
    timestamp = _timestamp(event)
    return [
        Statement(
            id=_statement_id(event, resource, change, record, verb),
            actor=actor,
            verb=Verb(id=verb.id, display={portal.language: verb.display}),
            object=activity,
            result=None if verb is verbs.LAUNCHED else _result(verb, record, score),
            context=context,
            timestamp=(_started(record) or timestamp) if verb is verbs.LAUNCHED else timestamp,
        )
        for verb in chosen
    ]


def _attempt_parent(data: Any) -> dict[str, Any]:
    """Whose attempt, of which lesson: `data.parent`, which the drill-down puts beside it."""
    parent = data.get("parent")
    if not isinstance(parent, dict):
        raise ValueError(
            "data.parent is missing, and an attempt record names no learner, lesson or "
            "course: an event queued before the bridge recorded them cannot be a statement"
        )
    return parent


def _started(record: dict[str, Any]) -> datetime | None:
    """When an attempt was launched: its `startDate`, in UTC (None: Absorb gave none)."""
    start = record.get("startDate")
    if not isinstance(start, str):
        return None
    try:
        return parse_timestamp(start)
    except ValueError:
        raise ValueError(f"data.current.startDate {ascii(start)[:40]} is not a timestamp") from None


def _statement_id(
    event: dict[str, Any], resource: str, change: str, record: dict[str, Any], verb: verbs.Verb
) -> str:
    if verb is verbs.REGISTERED and resource != "attempt":
        return str(ids.registered_id(str(record.get("id", ""))))
    return str(ids.statement_id(str(event["id"]), verb.id))


def _voiding(event: dict[str, Any], resource: str, portal: Portal) -> Statement:
    """A removed enrollment voids its `registered` statement; the bridge is the actor.

    The snapshot a removal is found by keeps no learner, and voiding is what xAPI
    has for a record that no longer holds.
    """
    subject = event.get("subject")
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError(f"subject {ascii(subject)[:60]} names no enrollment")
    return Statement(
        id=ids.statement_id(str(event["id"]), verbs.VOIDED.id),
        actor=Agent(name=BRIDGE, account=Account(homePage=portal.home_page, name=BRIDGE)),
        verb=Verb(id=verbs.VOIDED.id, display={portal.language: verbs.VOIDED.display}),
        object=StatementRef(id=ids.registered_id(subject)),
        context=Context(
            platform=PLATFORM,
            extensions={EVENT_ID_EXTENSION: str(event["id"]), RESOURCE_EXTENSION: resource},
        ),
        timestamp=_timestamp(event),
    )


def _timestamp(event: dict[str, Any]) -> datetime | None:
    """The event's `time`: the record's `dateEdited`, already in UTC (None: Absorb gave none)."""
    time = event.get("time")
    if time is None:
        return None
    try:
        return parse_timestamp(str(time))
    except ValueError:
        raise ValueError(f"time {ascii(time)[:40]} is not a timestamp") from None


def _type(event: dict[str, Any]) -> tuple[str, str]:
    parts = str(event.get("type", "")).split(".")
    if len(parts) != 3 or parts[0] != "absorb" or parts[1] not in _OBJECTS:
        raise ValueError(f"type {str(event.get('type'))[:80]!r} is not an enrollment event")
    return parts[1], parts[2]


def _actor(learner: dict[str, Any], portal: Portal, where: str) -> Agent:
    """The learner named by `learner` (the record, or an attempt's `data.parent`: `where`)."""
    name = learner.get("fullName") if isinstance(learner.get("fullName"), str) else None
    email = learner.get("emailAddress")
    if portal.actor == "mbox" and isinstance(email, str) and email.strip():
        return Agent(name=name, mbox=f"mailto:{email.strip()}")
    user_id = learner.get("userId")
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError(
            f"{where}.userId {ascii(user_id)[:60]} names no learner, so the statement has no actor"
        )
    return Agent(name=name, account=Account(homePage=portal.home_page, name=user_id))


def _activity(resource: str, record: dict[str, Any], portal: Portal) -> Activity:
    kind, activity_type, id_field = _OBJECTS[resource]
    activity_id = record.get(id_field)
    if not isinstance(activity_id, str) or not activity_id.strip():
        raise ValueError(f"data.current.{id_field} {ascii(activity_id)[:60]} is not an id")
    label = record.get("courseName" if resource == "course_enrollment" else "name")
    name = {portal.language: label} if isinstance(label, str) and label else None
    return Activity(
        id=portal.iri(kind, activity_id),
        definition=ActivityDefinition(name=name, type=activity_type),
    )


def _context(
    event: dict[str, Any], resource: str, record: dict[str, Any], course_id: str, portal: Portal
) -> Context:
    extensions = _extensions(event)
    if resource == "course_enrollment":
        return Context(
            registration=ids.registration(record.get("id"), "data.current.id"),
            platform=PLATFORM,
            extensions=extensions,
        )
    parents = None
    if course_id:  # the delivery's course, which the engine always knows
        parents = ContextActivities(parent=[_course(course_id, portal)])
    return Context(
        registration=ids.registration(
            record.get("courseEnrollmentId"), "data.current.courseEnrollmentId"
        ),
        contextActivities=parents,
        platform=PLATFORM,
        extensions=extensions,
    )


def _attempt_context(
    event: dict[str, Any], parent: dict[str, Any], course_id: str, portal: Portal
) -> Context:
    """An attempt's context: the course enrollment as registration, the lesson as parent
    and the course as grouping (the attempt is one try at the lesson, within the course)."""
    extensions = _extensions(event)
    lesson_id = parent.get("lessonId")
    if not isinstance(lesson_id, str) or not lesson_id.strip():
        raise ValueError(f"data.parent.lessonId {ascii(lesson_id)[:60]} is not an id")
    lesson = Activity(
        id=portal.iri("lesson", lesson_id),
        definition=ActivityDefinition(type=ADL_ACTIVITY + "lesson"),
    )
    course = parent.get("courseId")
    course = course if isinstance(course, str) and course.strip() else course_id
    return Context(
        registration=ids.registration(
            parent.get("courseEnrollmentId"), "data.parent.courseEnrollmentId"
        ),
        contextActivities=ContextActivities(
            parent=[lesson], grouping=[_course(course, portal)] if course else None
        ),
        platform=PLATFORM,
        extensions=extensions,
    )


def _extensions(event: dict[str, Any]) -> dict[str, Any]:
    """The context extensions: the event's id, and Absorb's status name when it has one."""
    extensions: dict[str, Any] = {EVENT_ID_EXTENSION: str(event["id"])}
    if event.get("status"):
        extensions[STATUS_EXTENSION] = str(event["status"])
    return extensions


def _course(course_id: str, portal: Portal) -> Activity:
    return Activity(
        id=portal.iri("course", course_id), definition=ActivityDefinition(type=CMI5_COURSE)
    )


def _score(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"data.current.score {ascii(value)[:40]} is not a number")
    if not 0 <= value <= 100:
        raise ValueError(f"data.current.score {value} is not a percentage (0..100)")
    return float(value)


def _result(verb: verbs.Verb, record: dict[str, Any], score: float | None) -> Result | None:
    success: bool | None = None
    completion: bool | None = None
    extensions: dict[str, Any] | None = None
    if verb in (verbs.COMPLETED, verbs.PASSED):
        completion = True
        success = True if score is not None else None
    elif verb is verbs.FAILED:
        success = False
    elif verb is verbs.ABANDONED:
        completion = False
    elif verb is verbs.PROGRESSED and isinstance(record.get("progress"), int | float):
        extensions = {PROGRESS_EXTENSION: record["progress"]}
    result = Result(
        score=_scored(score),
        success=success,
        completion=completion,
        duration=_duration(record),
        extensions=extensions,
    )
    return result if result.model_dump(exclude_none=True) else None


def _scored(score: float | None) -> Score | None:
    if score is None:
        return None
    # Rounded: 91.82 / 100 is 0.9181999999999999 in binary, and a reader wants 0.9182.
    return Score(scaled=round(score / 100, 9), raw=score, min=0, max=100)


def _duration(record: dict[str, Any]) -> str | None:
    if record.get("timeSpent") is not None:
        return timespan.from_timespan(record["timeSpent"])
    if record.get("timeSpentTicks") is not None:
        return timespan.from_ticks(record["timeSpentTicks"])
    return None
