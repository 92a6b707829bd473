"""Typed models of Absorb's enrollment resources, tolerant of what Absorb really sends.

Fields mirror Absorb's camelCase names by alias and are snake_case in code. Unknown
fields are kept (`extra="allow"`), every field may be null, timestamps may lack a
zone or carry seven fractional digits, and `timeSpent` is a .NET TimeSpan string.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Annotated, Any, ClassVar, Generic, Required, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    model_validator,
)
from pydantic.alias_generators import to_camel
from typing_extensions import TypedDict

from bridge.absorb import timefmt


class Status(IntEnum):
    """Enrollment status, with Absorb's own names."""

    NotStarted = 0
    InProgress = 1
    PendingApproval = 2
    Complete = 3
    NotComplete = 4
    Failed = 5
    Declined = 6
    PendingEvaluationRequired = 7
    OnWaitlist = 8
    Absent = 9
    NotApplicable = 10
    PendingProctor = 11
    ReadyForReview = 12


class AttemptStatus(IntEnum):
    """The statuses an attempt can have."""

    InProgress = 1
    Complete = 3
    Failed = 5


_UNKNOWN_STATUS = re.compile(r"Unknown\((-?[0-9]+)\)")


def status_name(value: int) -> str:
    """Absorb's name of a status number; `Unknown(N)` for a number Absorb added to its enum."""
    try:
        return Status(value).name
    except ValueError:
        return f"Unknown({value})"


#: How events name a status a snapshot kept as out of range (any number beyond 0..253).
OUT_OF_RANGE_STATUS = "Unknown(out of range)"


def is_status_name(text: str) -> bool:
    """Whether `text` names a status as events do: a `Status`, `Unknown(N)` or out of range."""
    return (
        text in Status.__members__
        or text == OUT_OF_RANGE_STATUS
        or _UNKNOWN_STATUS.fullmatch(text) is not None
    )


def _known_status(value: int) -> int:
    # A number outside the enum is a status Absorb added, not an error: keep it as a number.
    try:
        return Status(value)
    except ValueError:
        return value


def _known_attempt_status(value: int) -> int:
    try:
        return AttemptStatus(value)
    except ValueError:
        return value


#: A status as Absorb sends it: a `Status` when the enum knows it, else the number itself.
AnyStatus = Annotated[int, AfterValidator(_known_status)]
AnyAttemptStatus = Annotated[int, AfterValidator(_known_attempt_status)]

_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


def _as_utc(value: datetime) -> datetime:
    # Absorb leaves the zone out and means UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01 east of UTC or 9999-12-31 west of it: UTC's own end
        return _FIRST if value.year == 1 else _LAST


def _to_timespan(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return timefmt.parse_timespan(value)
    except OverflowError:  # pydantic reports a ValueError as the field's error; this not
        raise ValueError(f"TimeSpan beyond what it can hold: {value[:40]!r}") from None


#: Parsed by pydantic's compiled parser (seven fractional digits: the seventh is dropped);
#: `AbsorbModel` then puts every timestamp in UTC, a zone-less one being UTC already.
AbsorbDateTime = Annotated[
    datetime,
    PlainSerializer(timefmt.format_datetime, return_type=str, when_used="json"),
]
TimeSpan = Annotated[
    timedelta,
    BeforeValidator(_to_timespan),
    PlainSerializer(timefmt.format_timespan, return_type=str, when_used="json"),
]


class AbsorbModel(BaseModel):
    """Base of every Absorb body: camelCase aliases, unknown fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True
    )

    @model_validator(mode="after")
    def _timestamps_in_utc(self) -> Self:
        # One call per record, not one per timestamp field: validation is the sweep's hot path.
        values = self.__dict__
        for name, value in values.items():
            if type(value) is datetime and value.tzinfo is not UTC:
                values[name] = _as_utc(value)
        return self

    def to_absorb(self) -> dict[str, Any]:
        """The body as Absorb spells it (camelCase, unset fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class CourseEnrollment(AbsorbModel):
    """A course enrollment (Absorb's UserCourseEnrollmentResource and CourseEnrollmentResource)."""

    id: str
    course_id: str | None = None
    course_name: str | None = None
    progress: float | None = None
    score: float | None = None
    status: AnyStatus | None = None
    date_completed: AbsorbDateTime | None = None
    date_expires: AbsorbDateTime | None = None
    date_edited: AbsorbDateTime | None = None
    date_added: AbsorbDateTime | None = None
    full_name: str | None = None
    course_version_id: str | None = None
    user_id: str | None = None
    accepted_terms_and_conditions: bool | None = None
    time_spent_ticks: int | None = None
    time_spent: TimeSpan | None = None
    date_started: AbsorbDateTime | None = None
    enrollment_key_id: str | None = None
    certificate_id: str | None = None
    credits: float | None = None
    is_active: bool | None = None
    date_due: AbsorbDateTime | None = None
    access_date: AbsorbDateTime | None = None
    job_title: str | None = None
    course_collection_id: str | None = None
    avatar: str | None = None


class CourseEnrollmentUpdate(AbsorbModel):
    """Body of "Create or update course enrollment".

    Absorb applies only Status, DateCompleted, DateExpires, CourseVersionId,
    AcceptedTermsAndConditions, EnrollmentKeyId, Credits and Score; the other
    fields are accepted and ignored.
    """

    course_id: str
    id: str | None = None
    course_name: str | None = None
    progress: float | None = None
    score: float | None = None
    status: Status | None = None
    date_completed: AbsorbDateTime | None = None
    date_expires: AbsorbDateTime | None = None
    full_name: str | None = None
    job_title: str | None = None
    course_version_id: str | None = None
    user_id: str | None = None
    accepted_terms_and_conditions: bool | None = None
    date_started: AbsorbDateTime | None = None
    enrollment_key_id: str | None = None
    certificate_id: str | None = None
    credits: float | None = None
    is_active: bool | None = None
    course_collection_id: str | None = None
    access_date: AbsorbDateTime | None = None
    date_due: AbsorbDateTime | None = None
    avatar: str | None = None
    credit_type_credits: list[dict[str, Any]] | None = None


class ActivityEnrollment(AbsorbModel):
    """Fields every activity enrollment (lesson, chapter, session) shares."""

    id: str
    course_enrollment_id: str | None = None
    name: str | None = None
    user_id: str | None = None
    full_name: str | None = None
    status: AnyStatus | None = None
    progress: float | None = None
    score: float | None = None
    time_spent: TimeSpan | None = None
    date_enrolled: AbsorbDateTime | None = None
    date_started: AbsorbDateTime | None = None
    date_completed: AbsorbDateTime | None = None


class LessonEnrollment(ActivityEnrollment):
    """A learner's enrollment in one lesson of a course."""

    chapter_enrollment_id: str | None = None
    type: str | None = None
    attempts: int | None = None
    failures: int | None = None
    last_attempt: AbsorbDateTime | None = None
    chapter_id: str | None = None
    lesson_id: str | None = None
    date_edited: AbsorbDateTime | None = None
    date_added: AbsorbDateTime | None = None


class ChapterEnrollment(ActivityEnrollment):
    """A learner's enrollment in one chapter of a course (the page shows no `dateEdited`)."""

    chapter_id: str | None = None
    session_id: str | None = None
    lesson_id: str | None = None
    lesson_enrollment_ids: list[str] | None = None
    date_edited: AbsorbDateTime | None = None


class SessionEnrollment(ActivityEnrollment):
    """A learner's enrollment in one session of an instructor-led course."""

    session_id: str | None = None
    date_edited: AbsorbDateTime | None = None


class Attempt(AbsorbModel):
    """One attempt at a lesson."""

    id: str
    time_spent_ticks: int | None = None
    status: AnyAttemptStatus | None = None
    score: float | None = None
    start_date: AbsorbDateTime | None = None
    completion_date: AbsorbDateTime | None = None


def record_validator(model: type[AbsorbModel]) -> TypeAdapter[dict[str, Any]]:
    """A validator of raw records with `model`'s fields and rules that returns a plain dict.

    The dict is keyed by Absorb's (camelCase) names and holds only the model's
    fields, parsed; timestamps are as pydantic parsed them (see `as_utc`). A sweep
    validates every changed record, and this costs a third of building the model.
    """
    return _record_validator(model)


@functools.cache
def _record_validator(model: type[AbsorbModel]) -> TypeAdapter[dict[str, Any]]:
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation: Any = info.rebuild_annotation()
        fields[info.alias or name] = Required[annotation] if info.is_required() else annotation
    # The functional form: the field names are known only when this runs.
    make_typed_dict: Any = TypedDict
    shape = make_typed_dict(f"{model.__name__}Record", fields, total=False)
    return TypeAdapter(shape)


_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(datetime)


def parse_timestamp(text: str) -> datetime:
    """A timestamp read exactly as the models and `record_validator` read it, in UTC.

    Raises `ValueError` (pydantic's `ValidationError`) when it is not one.
    """
    return _as_utc(_TIMESTAMP.validate_python(text))


def as_utc(value: datetime | None) -> datetime | None:
    """A timestamp from `record_validator` in UTC: Absorb means UTC when it gives no zone."""
    if value is None or value.tzinfo is UTC:
        return value
    return _as_utc(value)


class FinishAttempt(AbsorbModel):
    """Body of both "Finish attempt" operations."""

    status: AttemptStatus
    score: float | None = None
    start_date: AbsorbDateTime | None = None
    completion_date: AbsorbDateTime | None = None


class EnrollmentCreated(AbsorbModel):
    """Reply of the operations that create (or create-or-update) a course enrollment."""

    enrollment_id: str
    course_id: str | None = None
    user_id: str | None = None


class IlcEnrollmentCreated(AbsorbModel):
    """Reply of "Create ILC enrollment for user"."""

    user_id: str | None = None
    course_id: str | None = None
    session_id: str | None = None
    enrollment_id: str | None = None
    session_enrollment_id: str | None = None


class AttemptStarted(AbsorbModel):
    """Reply of "Start attempt for active lesson enrollment"."""

    attempt_id: str
    course_id: str | None = None
    user_id: str | None = None


class AttemptFinished(AbsorbModel):
    """Reply of both "Finish attempt" operations."""

    attempt_id: str


class ApiResult(AbsorbModel):
    """Absorb's generic result body (validations, code, message), as un-enroll returns it."""

    validations: list[Any] | None = None
    code: int | None = None
    message: str | None = None
    term: str | None = None
    meta: dict[str, Any] | None = Field(default=None, alias="_meta")


class Course(AbsorbModel):
    """A course, as `GET /courses` lists it (only the fields the bridge relies on are typed)."""

    id: str
    name: str | None = None
    course_type: str | None = None
    date_edited: AbsorbDateTime | None = None


ItemT = TypeVar("ItemT", bound=AbsorbModel)


class Page(AbsorbModel, Generic[ItemT]):
    """One page of a wrapped collection; `items_key` is where Absorb puts the array."""

    items_key: ClassVar[str]
    total_items: int
    returned_items: int
    limit: int
    offset: int

    @property
    def items(self) -> list[ItemT]:
        """The records of this page."""
        items: list[ItemT] = getattr(self, self.items_key)
        return items


class CourseEnrollmentPage(Page[CourseEnrollment]):
    """A page of course enrollments."""

    items_key: ClassVar[str] = "enrollments"
    enrollments: list[CourseEnrollment]


class SessionEnrollmentPage(Page[SessionEnrollment]):
    """A page of an ILC session's enrollments."""

    items_key: ClassVar[str] = "enrollments"
    enrollments: list[SessionEnrollment]


class LessonEnrollmentPage(Page[LessonEnrollment]):
    """A page of a lesson's enrollments."""

    items_key: ClassVar[str] = "lesson_enrollments"
    lesson_enrollments: list[LessonEnrollment]


class CoursePage(Page[Course]):
    """A page of courses."""

    items_key: ClassVar[str] = "courses"
    courses: list[Course]
