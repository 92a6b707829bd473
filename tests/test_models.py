"""Models and time formats accept what Absorb really sends, and refuse what it must not."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bridge.absorb import timefmt
from bridge.absorb.client import parse_model
from bridge.absorb.models import (
    AbsorbModel,
    Attempt,
    AttemptStatus,
    ChapterEnrollment,
    CourseEnrollment,
    CourseEnrollmentPage,
    CourseEnrollmentUpdate,
    LessonEnrollment,
    LessonEnrollmentPage,
    SessionEnrollment,
    Status,
    as_utc,
    parse_timestamp,
    record_validator,
)
from bridge.errors import AbsorbResponseError
from bridge.retry import backoff_s, parse_retry_after


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("2024-05-01T10:00:00.1234567", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T10:00:00.5Z", datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("2024-05-01T10:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
    ],
)
def test_timestamps_absorb_sends(text: str, expected: datetime) -> None:
    """Seven fractional digits, a missing zone (UTC) and offsets all parse to aware UTC."""
    assert timefmt.parse_datetime(text) == expected


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2024-13-01T00:00:00", "2024-05-01T10:00:00.12345678"]
)
def test_bad_timestamps_are_refused(text: str) -> None:
    """Anything else is a ValueError that quotes the text."""
    with pytest.raises(ValueError):  # noqa: PT011 - the message is checked below where it matters
        timefmt.parse_datetime(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:00:00", timedelta(0)),
        ("01:02:03", timedelta(hours=1, minutes=2, seconds=3)),
        ("1.02:03:04.5000000", timedelta(days=1, hours=2, minutes=3, seconds=4.5)),
        ("-00:00:01", timedelta(seconds=-1)),
        ("12:00:00.0000001", timedelta(hours=12)),
    ],
)
def test_timespans(text: str, expected: timedelta) -> None:
    """.NET TimeSpan strings parse to timedelta."""
    assert timefmt.parse_timespan(text) == expected


@given(st.timedeltas(min_value=timedelta(days=-9999), max_value=timedelta(days=9999)))
def test_timespans_round_trip(value: timedelta) -> None:
    """Formatting then parsing a TimeSpan gives the same duration."""
    assert timefmt.parse_timespan(timefmt.format_timespan(value)) == value


@given(
    st.datetimes(
        timezones=st.just(UTC), min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)
    )
)
def test_timestamps_round_trip(value: datetime) -> None:
    """Formatting then parsing a timestamp, with or without the Z, gives the same instant."""
    assert timefmt.parse_datetime(timefmt.format_datetime(value)) == value
    assert timefmt.parse_datetime(timefmt.format_datetime(value, zulu=False)) == value


def test_course_enrollment_tolerates_nulls_and_unknown_fields() -> None:
    """Nulls everywhere and fields Absorb added later are accepted and kept."""
    body = {
        "id": "a14c149a-2ce0-41d4-b532-02189ad3cb22",
        "status": 3,
        "progress": None,
        "score": None,
        "dateEdited": "2024-05-01T10:00:00.1234567",
        "timeSpent": "1.00:00:00",
        "someNewField": {"nested": True},
    }
    ce = CourseEnrollment.model_validate(body)
    assert ce.status == Status.Complete
    assert ce.status.name == "Complete"
    assert ce.time_spent == timedelta(days=1)
    assert ce.model_extra == {"someNewField": {"nested": True}}


def test_status_names_are_absorbs() -> None:
    """The enum carries Absorb's thirteen statuses by their own names."""
    assert [s.name for s in Status] == [
        "NotStarted", "InProgress", "PendingApproval", "Complete", "NotComplete", "Failed",
        "Declined", "PendingEvaluationRequired", "OnWaitlist", "Absent", "NotApplicable",
        "PendingProctor", "ReadyForReview",
    ]  # fmt: skip
    assert [s.value for s in AttemptStatus] == [1, 3, 5]


def test_activity_enrollments_and_attempts() -> None:
    """Lesson, chapter and session enrollments and attempts parse from Absorb's shapes."""
    lesson = LessonEnrollment.model_validate(
        {"id": "l", "attempts": 2, "failures": 1, "lastAttempt": "2024-01-01T00:00:00", "status": 5}
    )
    assert (lesson.attempts, lesson.status) == (2, Status.Failed)
    chapter = ChapterEnrollment.model_validate({"id": "c", "lessonEnrollmentIds": ["l"]})
    assert chapter.lesson_enrollment_ids == ["l"]
    session = SessionEnrollment.model_validate({"id": "s", "sessionId": "x", "status": 8})
    assert session.status == Status.OnWaitlist
    attempt = Attempt.model_validate({"id": "a", "status": 3, "timeSpentTicks": 10_000_000})
    assert attempt.status == AttemptStatus.Complete


def test_pages_parse_with_their_items_key() -> None:
    """Wrapped pages carry their records under the resource's own key."""
    page = CourseEnrollmentPage.model_validate(
        {
            "totalItems": 1,
            "returnedItems": 1,
            "limit": 20,
            "offset": 0,
            "enrollments": [{"id": "e"}],
        }
    )
    assert [e.id for e in page.items] == ["e"]
    lessons = LessonEnrollmentPage.model_validate(
        {"totalItems": 0, "returnedItems": 0, "limit": 20, "offset": 0, "lessonEnrollments": []}
    )
    assert lessons.items == []


def test_update_body_renders_camel_case_without_unset_fields() -> None:
    """Request bodies go out in Absorb's spelling and only with the fields that were set."""
    body = CourseEnrollmentUpdate(course_id="c", status=Status.Complete, score=90).to_absorb()
    assert body == {"courseId": "c", "status": 3, "score": 90.0}


def test_a_malformed_record_names_the_endpoint_and_field() -> None:
    """A wrong type is an error that names the call, the field and shows an excerpt."""
    with pytest.raises(AbsorbResponseError) as e:
        parse_model(CourseEnrollment, {"id": "e", "status": "banana"}, "GET /enrollments/e")
    message = str(e.value)
    assert message.startswith("GET /enrollments/e: unexpected reply (status:")
    assert "banana" in message


def test_backoff_grows_and_is_capped() -> None:
    """Backoff bounds double per attempt up to the cap; jitter stays inside them."""
    rng = random.Random(1)
    for attempt in range(1, 12):
        bound = min(30.0, 0.5 * 2 ** (attempt - 1))
        for _ in range(50):
            assert 0.0 <= backoff_s(attempt, rng=rng) <= bound


def test_retry_after_forms() -> None:
    """Retry-After as seconds or as an HTTP date; garbage is ignored."""
    now = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


_timestamps_and_spans = [
    "2024-05-01T10:00:00.1234567", "2024-05-01T12:00:00+02:00", "2024-13-01T00:00:00",
    "01:02:03", "1.02:03:04.5",
]  # fmt: skip
_field_values = (
    st.none()
    | st.booleans()
    | st.integers(-5, 20)
    | st.floats(-1, 200)
    | st.sampled_from(["", "x", "3", *_timestamps_and_spans])
)
_models = st.sampled_from(
    [CourseEnrollment, LessonEnrollment, ChapterEnrollment, SessionEnrollment, Attempt]
)


@given(_models, st.data())
def test_record_validator_agrees_with_the_model(
    model: type[AbsorbModel], data: st.DataObject
) -> None:
    """The sweep's dict validator accepts exactly what the model accepts, with the same values."""
    names = sorted(info.alias or name for name, info in model.model_fields.items())
    keys = data.draw(st.lists(st.sampled_from(names), unique=True))
    raw = {key: data.draw(_field_values) for key in keys}
    if data.draw(st.booleans()):
        raw["id"] = "5A8B0C6E-0000-4000-8000-000000000001"
    try:
        parsed = model.model_validate(raw)
    except ValidationError:
        with pytest.raises(ValidationError):
            record_validator(model).validate_python(raw)
        return
    values = record_validator(model).validate_python(raw)
    for name, info in model.model_fields.items():
        expected = getattr(parsed, name)
        got = values.get(info.alias or name)
        assert (as_utc(got) if isinstance(got, datetime) else got) == expected, name


@pytest.mark.parametrize("model", [CourseEnrollment, LessonEnrollment, SessionEnrollment])
def test_a_status_absorb_added_is_read_as_its_number(model: type[AbsorbModel]) -> None:
    """A status outside the enum is a new status, not an error: kept as its number."""
    known = model.model_validate({"id": "e1", "status": 3})
    added = model.model_validate({"id": "e1", "status": 13})
    assert known.status is Status.Complete  # type: ignore[attr-defined]
    assert added.status == 13  # type: ignore[attr-defined]
    assert type(added.status) is int  # type: ignore[attr-defined]
    assert record_validator(model).validate_python({"id": "e1", "status": 300})["status"] == 300


def test_an_attempt_status_absorb_added_is_read_as_its_number() -> None:
    """Attempts too: 1, 3 and 5 are `AttemptStatus`, any other whole number stays a number."""
    assert Attempt.model_validate({"id": "a", "status": 5}).status is AttemptStatus.Failed
    assert Attempt.model_validate({"id": "a", "status": 7}).status == 7


def test_a_status_that_is_not_a_whole_number_is_refused() -> None:
    """A wrong type is still an error, naming the field."""
    with pytest.raises(ValidationError, match="status"):
        CourseEnrollment.model_validate({"id": "e1", "status": "banana"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0001-01-01T00:00:00+01:00", datetime.min.replace(tzinfo=UTC)),
        ("9999-12-31T23:59:59.9999999-05:00", datetime.max.replace(tzinfo=UTC)),
        ("9999-12-31T23:59:59.9999999", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("0001-01-01T00:00:00", datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_dates_at_the_ends_of_the_calendar_are_read_without_overflow(
    text: str, expected: datetime
) -> None:
    """A date UTC cannot hold (0001-01-01 east of it, 9999-12-31 west) is UTC's own end."""
    assert CourseEnrollment.model_validate({"id": "e1", "dateEdited": text}).date_edited == expected
    assert parse_timestamp(text) == expected
