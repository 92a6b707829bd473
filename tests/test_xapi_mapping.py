"""The pure xAPI mapping: the verb table, the statement parts, ids, durations, hostile records."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import jsonschema
import pytest

from bridge.absorb.models import Status
from bridge.snapshots import Kind
from bridge.xapi import MappingError, Portal, statements_for
from bridge.xapi.compare import first_difference
from bridge.xapi.ids import registered_id, statement_id
from bridge.xapi.statements import EVENT_ID_EXTENSION
from bridge.xapi.timespan import from_ticks, from_timespan, iso_duration
from tests.xapi_events import AT, SOURCE, Enrollment

ADL = "http://adlnet.gov/expapi/verbs/"
PORTAL = Portal(SOURCE)


def verbs_of(statements: list[dict[str, Any]]) -> list[str]:
    """The verb IRIs of statements, in order, without the ADL prefix."""
    return [s["verb"]["id"].removeprefix(ADL) for s in statements]


def build(enrollment: Enrollment, event: dict[str, Any], portal: Portal = PORTAL) -> Any:
    """The statements of an event of this enrollment."""
    return statements_for(event, enrollment.course_id, portal)


@pytest.mark.parametrize(
    ("change", "status", "before", "expected"),
    [
        ("created", Status.InProgress, Status.InProgress, ["registered"]),
        ("created", Status.Complete, Status.InProgress, ["registered", "completed", "passed"]),
        ("status_changed", Status.InProgress, Status.NotStarted, ["attempted"]),
        ("status_changed", Status.Complete, Status.InProgress, ["completed", "passed"]),
        ("status_changed", Status.Failed, Status.InProgress, ["failed"]),
        ("status_changed", Status.NotComplete, Status.InProgress, ["abandoned"]),
        ("status_changed", Status.Absent, Status.InProgress, ["abandoned"]),
        ("status_changed", Status.Declined, Status.InProgress, ["abandoned"]),
        ("status_changed", Status.NotApplicable, Status.InProgress, ["waived"]),
        ("status_changed", Status.PendingApproval, Status.InProgress, []),
        ("status_changed", Status.NotStarted, Status.InProgress, []),
        ("removed", Status.InProgress, Status.InProgress, ["voided"]),
    ],
)
def test_the_verb_table(change: Any, status: Status, before: Status, expected: list[str]) -> None:
    """Each change and new status becomes the documented ADL verbs, in the documented order."""
    enrollment = Enrollment()
    event = enrollment.event(change, status, before=before)
    assert verbs_of(build(enrollment, event)) == expected


def test_a_completion_without_a_score_is_not_a_pass() -> None:
    """`passed` needs a known score; a completion without one is `completed` alone."""
    enrollment = Enrollment()
    event = enrollment.event("status_changed", Status.Complete, score=None)
    (completed,) = build(enrollment, event)
    assert completed["verb"]["id"] == ADL + "completed"
    assert completed["result"] == {"completion": True, "duration": "PT45M"}


def test_a_course_completion_statement_in_full() -> None:
    """Actor, verb, object, result, context and timestamp as the README documents them."""
    enrollment = Enrollment()
    event = enrollment.event(
        "status_changed", Status.Complete, score=92.5, timeSpent="1.02:03:04.5"
    )
    completed, passed = build(enrollment, event)
    assert completed == {
        "id": str(statement_id(event["id"], ADL + "completed")),
        "actor": {
            "objectType": "Agent",
            "name": "Test Learner",
            "account": {"homePage": SOURCE, "name": enrollment.user_id},
        },
        "verb": {"id": ADL + "completed", "display": {"en-US": "completed"}},
        "object": {
            "objectType": "Activity",
            "id": f"{SOURCE}/xapi/course/{enrollment.course_id}",
            "definition": {
                "name": {"en-US": "absorb-bridge test course"},
                "type": "https://w3id.org/xapi/cmi5/activitytype/course",
            },
        },
        "result": {
            "score": {"scaled": 0.925, "raw": 92.5, "min": 0.0, "max": 100.0},
            "success": True,
            "completion": True,
            "duration": "P1DT2H3M4.5S",
        },
        "context": {
            "registration": enrollment.enrollment_id,
            "platform": "Absorb LMS",
            "extensions": {
                EVENT_ID_EXTENSION: event["id"],
                "urn:absorb-bridge:xapi:absorb-status": "Complete",
            },
        },
        "timestamp": "2026-03-02T14:30:00Z",
    }
    assert passed["verb"]["id"] == ADL + "passed"
    assert passed["id"] != completed["id"]
    assert {k: v for k, v in passed.items() if k not in ("id", "verb")} == {
        k: v for k, v in completed.items() if k not in ("id", "verb")
    }


def test_a_lesson_statement_names_its_course_as_parent() -> None:
    """A lesson is its own activity, its course the parent, its enrollment the registration."""
    enrollment = Enrollment()
    event = enrollment.event(
        "status_changed", Status.Failed, kind=Kind.lesson_enrollment, score=91.82
    )
    (failed,) = build(enrollment, event)
    assert failed["object"]["id"] == f"{SOURCE}/xapi/lesson/{enrollment.lesson_id}"
    assert failed["object"]["definition"]["type"] == "http://adlnet.gov/expapi/activities/lesson"
    assert failed["context"]["registration"] == enrollment.enrollment_id
    (parent,) = failed["context"]["contextActivities"]["parent"]
    assert parent["id"] == f"{SOURCE}/xapi/course/{enrollment.course_id}"
    assert failed["result"] == {
        "score": {"scaled": 0.9182, "raw": 91.82, "min": 0.0, "max": 100.0},
        "success": False,
        "duration": "PT15M",
    }


def test_removal_voids_the_registered_statement() -> None:
    """A removed enrollment's statement voids the `registered` one its creation made."""
    enrollment = Enrollment()
    (registered,) = build(enrollment, enrollment.event("created", Status.InProgress))
    (voiding,) = build(enrollment, enrollment.event("removed", Status.InProgress))
    assert registered["id"] == str(registered_id(enrollment.enrollment_id))
    assert voiding["verb"]["id"] == ADL + "voided"
    assert voiding["object"] == {"objectType": "StatementRef", "id": registered["id"]}
    assert voiding["actor"]["account"] == {"homePage": SOURCE, "name": "absorb-bridge"}


def test_mbox_actor_from_the_record_email_else_the_account() -> None:
    """`actor: mbox` names the learner by email where the record has one, else by account."""
    enrollment = Enrollment()
    portal = Portal(SOURCE, actor="mbox")
    with_email = enrollment.event("status_changed", Status.Failed, emailAddress="ann@example.com")
    without = enrollment.event("status_changed", Status.Failed)
    assert build(enrollment, with_email, portal)[0]["actor"] == {
        "objectType": "Agent",
        "name": "Test Learner",
        "mbox": "mailto:ann@example.com",
    }
    assert "account" in build(enrollment, without, portal)[0]["actor"]


def test_a_configured_portal_is_the_home_page_and_the_iri_base() -> None:
    """`portal` replaces the tenant's API URL in accounts and activity IRIs."""
    enrollment = Enrollment()
    portal = Portal("https://learn.acme.com/")
    (failed,) = build(enrollment, enrollment.event("status_changed", Status.Failed), portal)
    assert failed["actor"]["account"]["homePage"] == "https://learn.acme.com/"
    assert failed["object"]["id"].startswith("https://learn.acme.com/xapi/course/")


def test_statement_ids_are_deterministic_per_event_and_verb() -> None:
    """The same event gives the same ids every time; another verb or event another id."""
    enrollment = Enrollment()
    event = enrollment.event("status_changed", Status.Complete)
    first = [s["id"] for s in build(enrollment, event)]
    again = [s["id"] for s in build(enrollment, json.loads(json.dumps(event)))]
    assert first == again
    assert len(set(first)) == 2
    other = enrollment.event("status_changed", Status.Complete, at=AT + timedelta(hours=1))
    assert not set(first) & {s["id"] for s in build(enrollment, other)}


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("score", "ninety", "data.current.score 'ninety' is not a number"),
        ("score", 250.0, "data.current.score 250.0 is not a percentage"),
        ("score", True, "data.current.score True is not a number"),
        ("timeSpent", "45 minutes", "not a TimeSpan"),
        ("timeSpent", "-00:05:00", "negative time spent"),
        ("timeSpent", 2700, "timeSpent 2700 is not a TimeSpan string"),
        ("userId", None, "data.current.userId None names no learner"),
        ("userId", "", "data.current.userId '' names no learner"),
        ("id", "E-1001", "data.current.id 'E-1001' is not a GUID"),
        ("courseId", None, "data.current.courseId None is not an id"),
    ],
)
def test_a_hostile_record_fails_its_event_alone_naming_the_field(
    field: str, value: Any, named: str
) -> None:
    """An odd value is a MappingError naming the event and the field, never another exception."""
    enrollment = Enrollment()
    event = enrollment.event("status_changed", Status.Failed)
    event["data"]["current"][field] = value
    with pytest.raises(MappingError) as caught:
        build(enrollment, event)
    assert named in str(caught.value)
    assert event["id"] in str(caught.value)


@pytest.mark.parametrize(
    "event",
    [
        {"id": "e1", "type": "absorb.course_enrollment.status_changed", "data": None},
        {"id": "e2", "type": "absorb.course_enrollment.status_changed", "data": {"current": []}},
        {"id": "e3", "type": "something.else", "data": {"current": {}}},
        {"id": "e4", "type": "absorb.course_enrollment.removed", "subject": None},
        {
            "id": "e5",
            "type": "absorb.course_enrollment.created",
            "time": "yesterday",
            "status": "InProgress",
            "data": {"current": {"userId": "u", "courseId": "c"}},
        },
    ],
)
def test_a_malformed_event_is_a_mapping_error(event: dict[str, Any]) -> None:
    """Whatever shape an event has, the mapping answers with a MappingError naming it."""
    with pytest.raises(MappingError, match=event["id"]):
        statements_for(event, "", PORTAL)


@pytest.mark.parametrize(
    ("change", "status", "expected"),
    [
        ("created", Status.InProgress, ["launched"]),
        ("created", Status.Complete, ["launched", "completed", "passed"]),
        ("created", Status.Failed, ["launched", "failed"]),
        ("status_changed", Status.Complete, ["completed", "passed"]),
        ("status_changed", Status.Failed, ["failed"]),
    ],
)
def test_the_verb_table_of_attempts(change: Any, status: Status, expected: list[str]) -> None:
    """An attempt is launched, not registered; one first seen finished is launched too."""
    enrollment = Enrollment()
    event = enrollment.event(change, status, kind=Kind.attempt)
    assert verbs_of(build(enrollment, event)) == expected


def test_an_attempt_statement_names_learner_lesson_course_and_enrollment() -> None:
    """From `data.parent`: the learner is the actor, the course enrollment the registration,
    the lesson the parent and the course the grouping; the attempt is the object, and its
    `launched` is timed at its startDate with no result."""
    enrollment = Enrollment()
    event = enrollment.event("created", Status.Complete, kind=Kind.attempt, score=80.0)
    launched, completed, passed = build(enrollment, event)
    attempt = {
        "objectType": "Activity",
        "id": f"{SOURCE}/xapi/attempt/{enrollment.attempt_id}",
        "definition": {"type": "http://adlnet.gov/expapi/activities/attempt"},
    }
    context = {
        "registration": enrollment.enrollment_id,
        "contextActivities": {
            "parent": [
                {
                    "objectType": "Activity",
                    "id": f"{SOURCE}/xapi/lesson/{enrollment.lesson_id}",
                    "definition": {"type": "http://adlnet.gov/expapi/activities/lesson"},
                }
            ],
            "grouping": [
                {
                    "objectType": "Activity",
                    "id": f"{SOURCE}/xapi/course/{enrollment.course_id}",
                    "definition": {"type": "https://w3id.org/xapi/cmi5/activitytype/course"},
                }
            ],
        },
        "platform": "Absorb LMS",
        "extensions": {
            EVENT_ID_EXTENSION: event["id"],
            "urn:absorb-bridge:xapi:absorb-status": "Complete",
        },
    }
    assert launched == {
        "id": str(statement_id(event["id"], ADL + "launched")),
        "actor": {
            "objectType": "Agent",
            "name": "Test Learner",
            "account": {"homePage": SOURCE, "name": enrollment.user_id},
        },
        "verb": {"id": ADL + "launched", "display": {"en-US": "launched"}},
        "object": attempt,
        "context": context,
        "timestamp": "2026-03-02T14:15:00Z",
    }
    assert completed["timestamp"] == "2026-03-02T14:30:00Z"
    assert completed["result"] == {
        "score": {"scaled": 0.8, "raw": 80.0, "min": 0.0, "max": 100.0},
        "success": True,
        "completion": True,
        "duration": "PT15M",
    }
    for statement in (completed, passed):
        assert statement["actor"] == launched["actor"]
        assert statement["object"] == attempt
        assert statement["context"] == context


def test_an_attempt_statement_validates_as_xapi(
    statement_schema: jsonschema.protocols.Validator,
) -> None:
    """Every statement of an attempt meets the xAPI 1.0.3 statement schema."""
    enrollment = Enrollment()
    for change, status in (("created", Status.Complete), ("status_changed", Status.Failed)):
        for statement in build(enrollment, enrollment.event(change, status, kind=Kind.attempt)):
            statement_schema.validate(statement)


def test_an_attempt_event_without_a_parent_says_so() -> None:
    """An attempt event made before `data.parent` existed cannot name its learner: the error
    says so, naming the event."""
    enrollment = Enrollment()
    event = enrollment.event("status_changed", Status.Complete, kind=Kind.attempt)
    del event["data"]["parent"]
    with pytest.raises(MappingError) as caught:
        build(enrollment, event)
    assert "data.parent is missing" in str(caught.value)
    assert event["id"] in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("userId", None, "data.parent.userId None names no learner"),
        ("userId", " ", "data.parent.userId ' ' names no learner"),
        ("courseEnrollmentId", "E-1001", "data.parent.courseEnrollmentId 'E-1001' is not a GUID"),
        ("lessonId", None, "data.parent.lessonId None is not an id"),
    ],
)
def test_a_hostile_attempt_parent_names_the_field(field: str, value: Any, named: str) -> None:
    """An odd `data.parent` fails its event alone, with a MappingError naming the field."""
    enrollment = Enrollment()
    event = enrollment.event("status_changed", Status.Failed, kind=Kind.attempt)
    event["data"]["parent"][field] = value
    with pytest.raises(MappingError) as caught:
        build(enrollment, event)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("span", "iso"),
    [
        (timedelta(0), "PT0S"),
        (timedelta(minutes=45), "PT45M"),
        (timedelta(days=2, hours=4), "P2DT4H"),
        (timedelta(seconds=3, microseconds=500_000), "PT3.5S"),
        (timedelta(hours=1, seconds=1, microseconds=1), "PT1H1.000001S"),
    ],
)
def test_iso_durations(span: timedelta, iso: str) -> None:
    """Spans render as the shortest ISO 8601 duration xAPI accepts."""
    assert iso_duration(span) == iso


def test_timespans_and_ticks_as_durations() -> None:
    """.NET TimeSpan strings (seven fractional digits, days) and ticks become durations."""
    assert from_timespan("00:45:00") == "PT45M"
    assert from_timespan("3.01:00:00.1234567") == "P3DT1H0.123456S"
    assert from_ticks(27_000_000_000) == "PT45M"
    with pytest.raises(ValueError, match="not a whole number"):
        from_ticks(1.5)
    with pytest.raises(ValueError, match="out of range"):
        from_timespan("00:61:00")


def test_every_mapped_statement_validates_against_the_xapi_schema(
    statement_schema: jsonschema.protocols.Validator,
) -> None:
    """Everything the mapping makes passes the xAPI 1.0.3 statement schema in tests/."""
    enrollment = Enrollment()
    made: list[dict[str, Any]] = []
    for kind in (Kind.course_enrollment, Kind.lesson_enrollment):
        for change, status in [
            ("created", Status.Complete),
            ("status_changed", Status.Failed),
            ("status_changed", Status.Absent),
            ("progress_changed", Status.InProgress),
            ("removed", Status.InProgress),
        ]:
            event = enrollment.event(change, status, kind=kind, progress=75.0)
            made += build(enrollment, event)
    assert len(made) == 14
    for statement in made:
        statement_schema.validate(statement)


def test_the_schema_rejects_what_xapi_forbids(
    statement_schema: jsonschema.protocols.Validator,
) -> None:
    """The schema the tests check with is not a rubber stamp: broken statements fail it."""
    enrollment = Enrollment()
    (good,) = build(enrollment, enrollment.event("status_changed", Status.Failed))
    broken = [
        {**good, "actor": {**good["actor"], "mbox": "mailto:a@example.com"}},
        {**good, "result": {"duration": "45 minutes"}},
        {**good, "result": {"score": {"scaled": 1.5}}},
        {**good, "verb": {"id": "completed"}},
        {**good, "context": {**good["context"], "registration": "E-1001"}},
        {k: v for k, v in good.items() if k != "object"},
    ]
    for statement in broken:
        assert not statement_schema.is_valid(statement), statement


def test_compare_finds_the_first_difference() -> None:
    """What an LRS adds is ignored; a changed value, instant or list is named by its path."""
    sent = {"id": "A", "timestamp": "2026-03-02T14:30:00Z", "result": {"score": {"raw": 92}}}
    stored = {
        "id": "a",
        "timestamp": "2026-03-02T14:30:00.000+00:00",
        "result": {"score": {"raw": 92.0}},
        "stored": "2026-03-02T15:00:00Z",
    }
    assert (
        first_difference(
            {**sent, "id": "3fa85f64-5717-4562-b3fc-2c963f66afa6"},
            {**stored, "id": "3FA85F64-5717-4562-B3FC-2C963F66AFA6"},
        )
        is None
    )
    changed = {**stored, "result": {"score": {"raw": 91}}}
    assert first_difference(sent, changed) == "id: sent 'A', the LRS holds 'a'"
    assert first_difference({"result": sent["result"]}, changed) == (
        "result.score.raw: sent 92, the LRS holds 91"
    )
    assert first_difference({"a": [1, 2]}, {"a": [1]}) == "a: a different list in the LRS"
    assert first_difference({"a": 1}, None) == "statement: not an object in the LRS"
