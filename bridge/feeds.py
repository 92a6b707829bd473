"""Feeds and their scopes: what to sweep, where Absorb lists it, and how to read its records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog
from pydantic import TypeAdapter, ValidationError

from bridge import metrics
from bridge.absorb.client import AbsorbClient, describe_invalid
from bridge.absorb.models import (
    Attempt,
    ChapterEnrollment,
    CourseEnrollment,
    LessonEnrollment,
    SessionEnrollment,
    as_utc,
    record_validator,
)
from bridge.absorb.paths import Op
from bridge.diff import Observation
from bridge.errors import BridgeError
from bridge.snapshots import Kind

log = structlog.get_logger(__name__)

Resource = Literal[
    "course_enrollments", "lesson_enrollments", "session_enrollments", "user_enrollments"
]
Detail = Literal["lessons", "chapters", "attempts"]


@dataclass(frozen=True)
class FeedSpec:
    """One feed of the config, in the engine's terms (durations in seconds)."""

    name: str
    resource: Resource
    course_ids: tuple[str, ...] | None = None
    lessons: tuple[tuple[str, str], ...] = ()
    sessions: tuple[tuple[str, str], ...] = ()
    user_ids: tuple[str, ...] = ()
    interval_s: float = 30.0
    #: Opt-in backoff of quiet scopes up to this interval; None keeps every interval.
    max_interval_s: float | None = None
    lookback_s: float = 600.0
    emit_on_first_sync: bool = False
    details: frozenset[Detail] = field(default_factory=frozenset)
    progress_events: bool = False
    reconcile_every_s: float = 86_400.0


@dataclass(frozen=True)
class Scope:
    """One list a feed sweeps: a course's enrollments, a lesson's, a session's or a user's."""

    feed: FeedSpec
    key: str
    op: Op
    ids: dict[str, str]
    items_key: str
    kind: Kind
    course_id: str | None = None

    def __str__(self) -> str:
        return f"{self.feed.name}/{self.key}"


def course_scope(feed: FeedSpec, course_id: str) -> Scope:
    """A course's enrollments."""
    return Scope(
        feed,
        f"course:{course_id}",
        Op.LIST_COURSE_ENROLLMENTS,
        {"course_id": course_id},
        "enrollments",
        Kind.course_enrollment,
        course_id,
    )


def static_scopes(feed: FeedSpec) -> list[Scope] | None:
    """The scopes a feed names outright; None when they must be discovered (every course)."""
    if feed.resource == "course_enrollments":
        if feed.course_ids is None:
            return None
        return [course_scope(feed, c) for c in feed.course_ids]
    if feed.resource == "lesson_enrollments":
        return [
            Scope(
                feed,
                f"lesson:{course}:{lesson}",
                Op.LIST_LESSON_ENROLLMENTS,
                {"course_id": course, "lesson_id": lesson},
                "lessonEnrollments",
                Kind.lesson_enrollment,
                course,
            )
            for course, lesson in feed.lessons
        ]
    if feed.resource == "session_enrollments":
        return [
            Scope(
                feed,
                f"session:{course}:{session}",
                Op.LIST_SESSION_ENROLLMENTS,
                {"course_id": course, "session_id": session},
                "enrollments",
                Kind.session_enrollment,
                course,
            )
            for course, session in feed.sessions
        ]
    return [
        Scope(
            feed,
            f"user:{user}",
            Op.LIST_USER_COURSE_ENROLLMENTS,
            {"user_id": user},
            "enrollments",
            Kind.course_enrollment,
        )
        for user in feed.user_ids
    ]


def scopes_of_course(scopes: list[Scope], course_id: str) -> list[Scope]:
    """The scopes that list enrollments of a course (its own, its lessons', its sessions')."""
    wanted = course_id.lower()
    return [s for s in scopes if s.course_id is not None and s.course_id.lower() == wanted]


def scopes_of_user(scopes: list[Scope], user_id: str) -> list[Scope]:
    """The scopes that list a user's enrollments."""
    wanted = user_id.lower()
    return [s for s in scopes if s.ids.get("user_id", "").lower() == wanted]


async def discover_scopes(feed: FeedSpec, client: AbsorbClient) -> list[Scope]:
    """Every scope of the feed, asking Absorb for its courses when the feed names none.

    A malformed course (wrong types, no usable id) is logged, counted and skipped;
    the others are discovered. A course listed twice is one scope.
    """
    known = static_scopes(feed)
    if known is not None:
        return known

    def skipped(error: str) -> None:
        metrics.QUARANTINED_RECORDS.labels(feed.name, "course").inc()
        log.warning("discovery.course_skipped", feed=feed.name, error=error)

    found: dict[str, Scope] = {}
    async for course in client.list_courses(on_invalid=skipped):
        course_id = usable_id(course.id)
        if course_id is None:
            skipped(f"GET /courses: course id {_shown(course.id)} is empty or not valid text")
        elif course_id not in found:
            found[course_id] = course_scope(feed, course.id)
    return list(found.values())


_VALIDATORS: dict[Kind, TypeAdapter[dict[str, Any]]] = {
    Kind.course_enrollment: record_validator(CourseEnrollment),
    Kind.lesson_enrollment: record_validator(LessonEnrollment),
    Kind.chapter_enrollment: record_validator(ChapterEnrollment),
    Kind.session_enrollment: record_validator(SessionEnrollment),
    Kind.attempt: record_validator(Attempt),
}


class Unreadable(BridgeError, ValueError):
    """A record that does not fit Absorb's documented shape; `record_id` when one was readable.

    `category` names what was wrong, for metrics: `not_an_object`, `bad_id` or `bad_field`.
    """

    def __init__(self, message: str, record_id: str | None, category: str = "bad_field") -> None:
        super().__init__(message)
        self.record_id = record_id
        self.category = category


def usable_id(value: object) -> str | None:
    """A record id the bridge can key state by (lower case), or None.

    An id must be a non-empty string of valid Unicode: one holding a lone UTF-16
    surrogate cannot be written to Redis, so its record goes to quarantine.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return None
    return value.lower()


def observe(
    kind: Kind,
    raw: Any,
    *,
    course_id: str | None = None,
    fallback_time: datetime | None = None,
    raw_digest: bytes | None = None,
    parent: dict[str, str] | None = None,
) -> Observation:
    """Read one raw record into an Observation, or raise `Unreadable` saying why.

    `raw_digest` is `snapshots.digest(raw)` when the caller computed it already;
    `parent` is what a drill-down record belongs to (see `drill_downs.parent_of`).
    """
    if not isinstance(raw, dict):
        raise Unreadable(f"record is a {type(raw).__name__}, not an object", None, "not_an_object")
    rid = usable_id(raw.get("id"))
    try:
        values = _VALIDATORS[kind].validate_python(raw)
    except ValidationError as e:
        category = "bad_id" if rid is None else "bad_field"
        raise Unreadable(describe_invalid(e, raw), rid, category) from None
    if rid is None:
        raise Unreadable(f"id {_shown(raw.get('id'))} is empty or not valid text", None, "bad_id")
    if kind == Kind.attempt:
        completed = as_utc(values.get("completionDate"))
        time = completed or as_utc(values.get("startDate"))
        return Observation(
            kind=kind,
            id=rid,
            raw=raw,
            status=_int(values.get("status")),
            progress=None,
            score=values.get("score"),
            is_active=None,
            date_edited=None,
            date_completed=completed,
            fallback_time=time or fallback_time,
            course_id=course_id,
            raw_digest=raw_digest,
            parent=parent,
        )
    return Observation(
        kind=kind,
        id=rid,
        raw=raw,
        status=_int(values.get("status")),
        progress=values.get("progress"),
        score=values.get("score"),
        is_active=values.get("isActive"),
        date_edited=as_utc(values.get("dateEdited")),
        date_completed=as_utc(values.get("dateCompleted")),
        fallback_time=fallback_time,
        course_id=(values.get("courseId") if usable_id(values.get("courseId")) else course_id),
        raw_digest=raw_digest,
        parent=parent,
    )


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _shown(value: object) -> str:
    return ascii(value)[:80]
