"""The simulated tenant's records and how each one renders as Absorb's JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bridge.absorb.timefmt import format_datetime, format_timespan, ticks
from bridge.simulator.odata import FieldSpec

#: How a course enrollment's lesson, chapter and attempt lists can be made to fail.
DRILL_DOWN_FAULTS = ("not_array", "empty", "404")


@dataclass(frozen=True, slots=True)
class RawJson:
    """JSON text a test forced into a reply, written verbatim (see `server.json_response`).

    Python values cannot hold everything Absorb may send (a lone surrogate escape
    as written, 1e39 as written, a number with 30 digits), so the text is spliced in.
    """

    text: str


def with_overrides(body: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A rendered body with forced values in; a `RawJson("")` leaves its field out."""
    if not overrides:
        return body
    merged = {**body, **overrides}
    return {k: v for k, v in merged.items() if not (isinstance(v, RawJson) and not v.text)}


def _ts(value: datetime | None) -> str | None:
    # Absorb's timestamps come without a zone (UTC meant) and with seven digits.
    return None if value is None else format_datetime(value, zulu=False)


@dataclass(slots=True, eq=False)
class User:
    """A learner (or the admin user, who is a learner too)."""

    id: str
    first_name: str
    last_name: str
    job_title: str | None = None

    @property
    def full_name(self) -> str:
        """First and last name, as Absorb shows them."""
        return f"{self.first_name} {self.last_name}"


@dataclass(slots=True, eq=False)
class Lesson:
    """A lesson of an online course, in one chapter."""

    id: str
    name: str
    chapter: Chapter


@dataclass(slots=True, eq=False)
class Chapter:
    """A chapter of an online course."""

    id: str
    name: str
    lessons: list[Lesson] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Session:
    """A session of an instructor-led course."""

    id: str
    name: str
    capacity: int


@dataclass(slots=True, eq=False)
class Course:
    """A course: online (chapters of lessons) or instructor-led (sessions)."""

    id: str
    name: str
    course_type: str
    date_edited: datetime
    requires_approval: bool = False
    chapters: list[Chapter] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    #: Raw values a test forced into the JSON (to play a malformed course).
    overrides: dict[str, Any] | None = None

    @property
    def lessons(self) -> list[Lesson]:
        """Every lesson of every chapter, in order."""
        return [lesson for chapter in self.chapters for lesson in chapter.lessons]

    def to_json(self) -> dict[str, Any]:
        """The course as `GET /courses` lists it."""
        body = {
            "id": self.id,
            "name": self.name,
            "courseType": self.course_type,
            "dateEdited": _ts(self.date_edited),
        }
        return with_overrides(body, self.overrides)


@dataclass(slots=True, eq=False)
class CourseEnrollmentRec:
    """A learner's enrollment in a course."""

    id: str
    user: User
    course: Course
    status: int
    date_added: datetime
    date_edited: datetime
    progress: float = 0.0
    score: float | None = None
    date_started: datetime | None = None
    date_completed: datetime | None = None
    date_expires: datetime | None = None
    date_due: datetime | None = None
    access_date: datetime | None = None
    time_spent: timedelta = timedelta(0)
    is_active: bool = True
    accepted_terms_and_conditions: bool = False
    credits: float | None = None
    certificate_id: str | None = None
    enrollment_key_id: str | None = None
    course_version_id: str | None = None
    course_collection_id: str | None = None
    chapters: list[ChapterEnrollmentRec] = field(default_factory=list)
    lessons: list[LessonEnrollmentRec] = field(default_factory=list)
    sessions: list[SessionEnrollmentRec] = field(default_factory=list)
    #: Raw values a test forced into the JSON (to play a malformed record).
    overrides: dict[str, Any] | None = None
    #: How this enrollment's drill-down lists answer: None (as Absorb should),
    #: "not_array", "empty" or "404" (see `DRILL_DOWN_FAULTS`).
    drill_down_fault: str | None = None
    #: Listed twice in a row in its pages, as a join gone wrong in Absorb would.
    duplicated: bool = False

    @property
    def user_id(self) -> str:
        return self.user.id

    @property
    def course_id(self) -> str:
        return self.course.id

    @property
    def course_name(self) -> str:
        return self.course.name

    @property
    def full_name(self) -> str:
        return self.user.full_name

    @property
    def job_title(self) -> str | None:
        return self.user.job_title

    def to_json(self) -> dict[str, Any]:
        """The enrollment as Absorb's UserCourseEnrollmentResource."""
        body = {
            "id": self.id,
            "courseId": self.course.id,
            "courseName": self.course.name,
            "progress": self.progress,
            "score": self.score,
            "status": self.status,
            "dateCompleted": _ts(self.date_completed),
            "dateExpires": _ts(self.date_expires),
            "dateEdited": _ts(self.date_edited),
            "dateAdded": _ts(self.date_added),
            "fullName": self.user.full_name,
            "courseVersionId": self.course_version_id,
            "userId": self.user.id,
            "acceptedTermsAndConditions": self.accepted_terms_and_conditions,
            "timeSpentTicks": ticks(self.time_spent),
            "timeSpent": format_timespan(self.time_spent),
            "dateStarted": _ts(self.date_started),
            "enrollmentKeyId": self.enrollment_key_id,
            "certificateId": self.certificate_id,
            "credits": self.credits,
            "isActive": self.is_active,
            "dateDue": _ts(self.date_due),
            "accessDate": _ts(self.access_date),
            "jobTitle": self.user.job_title,
            "courseCollectionId": self.course_collection_id,
            "avatar": None,
        }
        return with_overrides(body, self.overrides)


@dataclass(slots=True, eq=False, kw_only=True)
class _ActivityRec:
    """What lesson, chapter and session enrollments share."""

    id: str
    enrollment: CourseEnrollmentRec
    status: int
    date_enrolled: datetime
    date_edited: datetime
    progress: float = 0.0
    score: float | None = None
    time_spent: timedelta = timedelta(0)
    date_started: datetime | None = None
    date_completed: datetime | None = None
    #: Raw values a test forced into the JSON (to play a malformed record).
    overrides: dict[str, Any] | None = None

    @property
    def user_id(self) -> str:
        return self.enrollment.user.id

    @property
    def full_name(self) -> str:
        return self.enrollment.user.full_name

    def _render(self, name: str, **specific: Any) -> dict[str, Any]:
        body = {
            "id": self.id,
            "courseEnrollmentId": self.enrollment.id,
            **specific,
            "name": name,
            "userId": self.enrollment.user.id,
            "fullName": self.enrollment.user.full_name,
            "status": self.status,
            "progress": self.progress,
            "score": self.score,
            "timeSpent": format_timespan(self.time_spent),
            "dateEnrolled": _ts(self.date_enrolled),
            "dateStarted": _ts(self.date_started),
            "dateCompleted": _ts(self.date_completed),
        }
        return with_overrides(body, self.overrides)


@dataclass(slots=True, eq=False, kw_only=True)
class ChapterEnrollmentRec(_ActivityRec):
    """A learner's enrollment in a chapter (Absorb does not show its `dateEdited`)."""

    chapter: Chapter
    lessons: list[LessonEnrollmentRec] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The chapter enrollment as Absorb renders it."""
        body = self._render(
            self.chapter.name, chapterId=self.chapter.id, sessionId=None, lessonId=None
        )
        body.setdefault("lessonEnrollmentIds", [le.id for le in self.lessons])
        return body


@dataclass(slots=True, eq=False)
class AttemptRec:
    """One attempt at a lesson."""

    id: str
    lesson_enrollment: LessonEnrollmentRec
    status: int
    start_date: datetime
    completion_date: datetime | None = None
    score: float | None = None
    time_spent: timedelta = timedelta(0)

    def to_json(self) -> dict[str, Any]:
        """The attempt as Absorb renders it."""
        return {
            "id": self.id,
            "timeSpentTicks": ticks(self.time_spent),
            "status": self.status,
            "score": self.score,
            "startDate": _ts(self.start_date),
            "completionDate": _ts(self.completion_date),
        }


@dataclass(slots=True, eq=False, kw_only=True)
class LessonEnrollmentRec(_ActivityRec):
    """A learner's enrollment in a lesson."""

    chapter_enrollment: ChapterEnrollmentRec
    lesson: Lesson
    attempts: int = 0
    failures: int = 0
    last_attempt: datetime | None = None
    attempt_list: list[AttemptRec] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.lesson.name

    def to_json(self) -> dict[str, Any]:
        """The lesson enrollment as Absorb's LessonEnrollmentResource."""
        body = self._render(
            self.lesson.name,
            chapterEnrollmentId=self.chapter_enrollment.id,
            type="ObjectLesson",
            attempts=self.attempts,
            failures=self.failures,
            lastAttempt=_ts(self.last_attempt),
            chapterId=self.lesson.chapter.id,
            lessonId=self.lesson.id,
        )
        return {"dateEdited": _ts(self.date_edited), "dateAdded": _ts(self.date_enrolled), **body}


@dataclass(slots=True, eq=False, kw_only=True)
class SessionEnrollmentRec(_ActivityRec):
    """A learner's enrollment in a session of an instructor-led course."""

    session: Session

    def to_json(self) -> dict[str, Any]:
        """The session enrollment as Absorb's SessionEnrollmentResource."""
        body = self._render(self.session.name, sessionId=self.session.id)
        return {"dateEdited": _ts(self.date_edited), **body}


def _specs(**fields: tuple[str, str]) -> dict[str, FieldSpec]:
    return {name: FieldSpec(attr, kind) for name, (attr, kind) in fields.items()}  # type: ignore[arg-type]


_G, _S, _D, _N, _B = "guid", "string", "datetime", "number", "boolean"

#: What `_filter` and `_sort` may name on each collection (the API name, the attribute, the type).
COURSE_FIELDS = _specs(
    id=("id", _G), name=("name", _S), courseType=("course_type", _S), dateEdited=("date_edited", _D)
)
COURSE_ENROLLMENT_FIELDS = _specs(
    id=("id", _G),
    courseId=("course_id", _G),
    userId=("user_id", _G),
    courseName=("course_name", _S),
    fullName=("full_name", _S),
    jobTitle=("job_title", _S),
    status=("status", _N),
    progress=("progress", _N),
    score=("score", _N),
    isActive=("is_active", _B),
    dateAdded=("date_added", _D),
    dateEdited=("date_edited", _D),
    dateStarted=("date_started", _D),
    dateCompleted=("date_completed", _D),
    dateExpires=("date_expires", _D),
    dateDue=("date_due", _D),
)
_ACTIVITY_FIELDS = dict(  # noqa: C408 - keyword form mirrors _specs(...)
    id=("id", _G),
    userId=("user_id", _G),
    fullName=("full_name", _S),
    status=("status", _N),
    progress=("progress", _N),
    score=("score", _N),
    dateEnrolled=("date_enrolled", _D),
    dateStarted=("date_started", _D),
    dateCompleted=("date_completed", _D),
    dateEdited=("date_edited", _D),
)
LESSON_ENROLLMENT_FIELDS = _specs(
    **_ACTIVITY_FIELDS,
    name=("name", _S),
    attempts=("attempts", _N),
    failures=("failures", _N),
    lastAttempt=("last_attempt", _D),
)
SESSION_ENROLLMENT_FIELDS = _specs(**_ACTIVITY_FIELDS)
