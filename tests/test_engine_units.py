"""The engine's pure parts: snapshots, diffing, CloudEvents, routes, durations and feeds."""

from __future__ import annotations

import json
import math
import re
import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bridge.absorb.models import Status
from bridge.diff import Change, Observation, changed_fields, diff, removed
from bridge.durations import parse_duration
from bridge.events import cloud_event, encode, event_id, status_name
from bridge.feeds import FeedSpec, Unreadable, observe, static_scopes
from bridge.routes import Route, sinks_for
from bridge.snapshots import (
    Kind,
    Snapshot,
    bucket_of,
    buckets_for,
    digest,
    field_key,
    record_id,
)

SOURCE = "https://tenant.example.com"
RID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
COURSE = "0b7c1f7e-3d0a-4f55-9a43-7f1e2c0d9b11"


def _enrollment(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": RID,
        "courseId": COURSE,
        "userId": "9d2b0d8d-4f1b-4a11-8c51-5e0f6a4c77d3",
        "status": 1,
        "progress": 40.0,
        "score": 0.0,
        "isActive": True,
        "jobTitle": "Welder",
        "dateEdited": "2024-05-01T10:00:00.1234567",
        "dateCompleted": None,
    }
    raw.update(changes)
    return raw


def _obs(**changes: Any) -> Observation:
    return observe(Kind.course_enrollment, _enrollment(**changes))


def _stored(seen: Observation) -> Snapshot:
    """The snapshot as it comes back from Redis."""
    return Snapshot.unpack(seen.snapshot().pack())


def _status_change(**changes: Any) -> Change:
    (change,) = diff(
        _stored(_obs()), _obs(**changes), emit_created=False, progress_events=False
    ).changes
    return change


# ---- snapshots -----------------------------------------------------------------------------

FLOAT32_MAX = 3.4028234663852886e38
_money = st.integers(0, 100_000).map(lambda n: n / 100)
#: Anything Absorb may send for progress or score: NaN, infinities, 1e39, negatives, huge ints.
_number = (
    st.none()
    | _money
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([1e39, -1e39, 3.4028235e38, -0.0, 1e-45])
    | st.integers(-(10**400), 10**400)
)
_zones = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))])
#: From 0001-01-01 to 9999-12-31, in zones that push them past what UTC holds, and the epoch.
_date = (
    st.none()
    | st.datetimes(timezones=_zones)
    | st.datetimes(timezones=st.none())
    | st.just(datetime(1970, 1, 1, tzinfo=UTC))
)
_snapshots = st.builds(
    Snapshot,
    kind=st.sampled_from(Kind),
    status=st.none() | st.integers(-(2**70), 2**70),
    progress=_number,
    score=_number,
    is_active=st.sampled_from([None, True, False]),
    date_edited=_date,
    date_completed=_date,
    digest=st.binary(min_size=8, max_size=8),
)
_ordinary = st.builds(
    Snapshot,
    kind=st.sampled_from(Kind),
    status=st.none() | st.integers(0, 253),
    progress=st.none() | _money,
    score=st.none() | _money,
    is_active=st.sampled_from([None, True, False]),
    date_edited=st.none() | st.datetimes(min_value=datetime(1971, 1, 1), timezones=st.just(UTC)),
    date_completed=st.none() | st.datetimes(min_value=datetime(1971, 1, 1), timezones=st.just(UTC)),
    digest=st.binary(min_size=8, max_size=8),
)


def _kept_number(value: float | None) -> float | None:
    """The documented rule, written out: NaN none, float32's range, four decimals."""
    if value is None:
        return None
    huge = isinstance(value, int) and abs(value) >= 2**1000
    number = (math.inf if value > 0 else -math.inf) if huge else float(value)
    if math.isnan(number):
        return None
    number = max(-FLOAT32_MAX, min(FLOAT32_MAX, number))
    return round(struct.unpack("<f", struct.pack("<f", number))[0], 4)


def _kept_date(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    utc_offset = value.utcoffset() or timedelta(0)
    if value.replace(tzinfo=None) - datetime.min < utc_offset:
        return datetime.min.replace(tzinfo=UTC)
    if datetime.max - value.replace(tzinfo=None) < -utc_offset:
        return datetime.max.replace(tzinfo=UTC)
    moment = value.astimezone(UTC)
    return None if moment == datetime(1970, 1, 1, tzinfo=UTC) else moment


@given(_snapshots)
def test_snapshot_pack_is_total_and_follows_the_documented_rules(snapshot: Snapshot) -> None:
    """Any values pack into exactly 35 bytes, and come back as the README's rules say.

    NaN is no value, numbers beyond float32 are its largest, a status outside 0..253
    is 254, and dates are UTC (clamped to what UTC holds), the epoch meaning none.
    """
    packed = snapshot.pack()
    assert len(packed) == 35
    back = Snapshot.unpack(packed)
    status = snapshot.status
    assert back.status == (None if status is None else status if 0 <= status <= 253 else 254)
    assert back.progress == _kept_number(snapshot.progress)
    assert back.score == _kept_number(snapshot.score)
    assert back.date_edited == _kept_date(snapshot.date_edited)
    assert back.date_completed == _kept_date(snapshot.date_completed)
    assert (back.kind, back.is_active, back.digest) == (
        snapshot.kind,
        snapshot.is_active,
        snapshot.digest,
    )
    assert back == snapshot.kept()
    assert Snapshot.unpack(back.pack()) == back  # what is kept packs to itself


@given(_ordinary)
def test_snapshot_pack_round_trip_of_ordinary_values(snapshot: Snapshot) -> None:
    """Values Absorb documents (statuses 0..253, two-decimal numbers, dates after 1970) survive."""
    assert Snapshot.unpack(snapshot.pack()) == snapshot


@given(st.uuids())
def test_guid_ids_are_stored_as_16_bytes(guid: Any) -> None:
    """A GUID (any case) is kept as its 16 raw bytes and read back as the lowercase GUID."""
    for text in (str(guid), str(guid).upper()):
        key = field_key(text)
        assert key == guid.bytes
        assert record_id(key) == str(guid)


@pytest.mark.parametrize(
    "rid", ["42", "enrollment-7", "x" * 40, "née-ø", "abcdefghijklmnop", "user_enrollment1"]
)
def test_non_guid_ids_are_stored_as_text(rid: str) -> None:
    """A non-GUID id is kept as text, never mistaken for a GUID, and read back unchanged."""
    key = field_key(rid)
    assert rid.encode() in key
    assert len(key) != 16
    assert record_id(key) == rid


@given(st.text(alphabet="0123456789abcdefABCDEFxyzXYZ-_", min_size=1), st.integers(1, 1000))
def test_bucket_of_is_stable_case_insensitive_and_in_range(rid: str, buckets: int) -> None:
    """A record always lands in the same bucket, whatever the case of its id."""
    bucket = bucket_of(rid, buckets)
    assert 0 <= bucket < buckets
    assert bucket_of(rid, buckets) == bucket
    assert bucket_of(rid.upper(), buckets) == bucket_of(rid.lower(), buckets) == bucket


@pytest.mark.parametrize(("records", "buckets"), [(0, 1), (1, 1), (64, 1), (65, 2), (640, 10)])
def test_buckets_for(records: int, buckets: int) -> None:
    """At least one bucket, and at most 64 records a bucket."""
    assert buckets_for(records) == buckets


# What JSON can carry: no NaN or infinity.
_json_scalar = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)  # fmt: skip


@given(st.dictionaries(st.text(), _json_scalar, min_size=1), st.data())
def test_digest_ignores_key_order_but_not_values(raw: dict[str, Any], data: st.DataObject) -> None:
    """Reordered keys give the same digest; any changed value gives another."""
    assert len(digest(raw)) == 8
    assert digest(dict(reversed(raw.items()))) == digest(raw)
    key = data.draw(st.sampled_from(sorted(raw)))
    value = data.draw(_json_scalar)
    assume(repr(value) != repr(raw[key]))
    assert digest({**raw, key: value}) != digest(raw)


def test_digest_sorts_nested_keys() -> None:
    """Key order does not matter inside nested objects either."""
    assert digest({"a": {"x": 1, "y": 2}, "b": 1}) == digest({"b": 1, "a": {"y": 2, "x": 1}})


# ---- diff ----------------------------------------------------------------------------------


def test_first_sight_is_a_silent_baseline() -> None:
    """Without a snapshot and emit_created=False: no change, but a snapshot to store."""
    seen = _obs()
    outcome = diff(None, seen, emit_created=False, progress_events=False)
    assert outcome.changes == ()
    assert outcome.snapshot == seen.snapshot()


def test_first_sight_with_emit_created_is_created() -> None:
    """Without a snapshot and emit_created=True: one `created` change of the record."""
    seen = _obs()
    outcome = diff(None, seen, emit_created=True, progress_events=False)
    (change,) = outcome.changes
    assert (change.change, change.subject, change.current, change.previous) == (
        "created",
        RID,
        seen,
        None,
    )
    assert outcome.snapshot == seen.snapshot()


def test_same_record_again_is_nothing() -> None:
    """The same record against its stored snapshot: no change and nothing to store."""
    outcome = diff(_stored(_obs()), _obs(), emit_created=True, progress_events=True)
    assert outcome.changes == ()
    assert outcome.snapshot is None


def test_status_change() -> None:
    """A new status is exactly one status_changed, carrying the previous status."""
    before = _stored(_obs())
    outcome = diff(
        before,
        _obs(status=3, progress=100.0, dateEdited="2024-05-02T09:00:00Z"),
        emit_created=False,
        progress_events=False,
    )
    (change,) = outcome.changes
    assert change.change == "status_changed"
    assert change.previous == before
    assert change.previous.status == 1
    assert "status" in change.changed
    assert {"progress", "dateEdited"} <= set(change.changed)
    assert outcome.snapshot is not None
    assert outcome.snapshot.status == 3


@pytest.mark.parametrize("changes", [{"progress": 55.5}, {"score": 87.25}])
def test_progress_changes_only_with_progress_events(changes: dict[str, Any]) -> None:
    """Progress or score moving under the same status is an event only with progress_events."""
    before = _stored(_obs())
    quiet = diff(before, _obs(**changes), emit_created=False, progress_events=False)
    assert quiet.changes == ()
    assert quiet.snapshot is not None
    loud = diff(before, _obs(**changes), emit_created=False, progress_events=True)
    (change,) = loud.changes
    assert change.change == "progress_changed"
    assert change.changed == tuple(changes)
    assert loud.snapshot == quiet.snapshot


def test_older_copy_changes_nothing() -> None:
    """A record edited before its snapshot was taken is an old copy: no change, no snapshot."""
    before = _stored(_obs(dateEdited="2024-05-02T00:00:00Z"))
    outcome = diff(
        before,
        _obs(status=3, dateEdited="2024-05-01T23:59:59Z"),
        emit_created=True,
        progress_events=True,
    )
    assert outcome.changes == ()
    assert outcome.snapshot is None


def test_untracked_field_moves_only_the_digest() -> None:
    """A change in a field diffing does not track is no event, but a new snapshot is stored."""
    before = _stored(_obs())
    outcome = diff(before, _obs(jobTitle="Foreman"), emit_created=True, progress_events=True)
    assert outcome.changes == ()
    assert outcome.snapshot is not None
    assert outcome.snapshot.digest != before.digest
    assert changed_fields(before, outcome.snapshot) == ()


def test_removed_change() -> None:
    """removed() is a `removed` change with the last snapshot and no current record."""
    before = _stored(_obs())
    change = removed(Kind.course_enrollment, RID, before)
    assert (change.change, change.kind, change.subject) == ("removed", Kind.course_enrollment, RID)
    assert (change.current, change.previous, change.changed) == (None, before, ())


# ---- events --------------------------------------------------------------------------------

_ATTRIBUTES = {"specversion", "id", "source", "type", "subject", "time", "datacontenttype"}
_ATTRIBUTES |= {"status", "data"}
_RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


def test_created_event_has_the_contract_attributes() -> None:
    """A created event: the CloudEvents attributes of the contract, no previousstatus."""
    seen = _obs()
    (change,) = diff(None, seen, emit_created=True, progress_events=False).changes
    event = cloud_event(SOURCE, change)
    assert set(event) == _ATTRIBUTES
    assert event["specversion"] == "1.0"
    assert event["source"] == SOURCE
    assert event["type"] == "absorb.course_enrollment.created"
    assert event["subject"] == RID
    assert event["time"] == "2024-05-01T10:00:00.123456Z"
    assert event["datacontenttype"] == "application/json"
    assert event["status"] == "InProgress"
    assert event["data"] == {"current": seen.raw, "previous": None, "changed": []}


def test_status_changed_event_names_both_statuses() -> None:
    """A status_changed event carries previousstatus and the stored fields under data.previous."""
    change = _status_change(status=3, dateEdited="2024-05-02T09:00:00Z")
    event = cloud_event(SOURCE, change)
    assert set(event) == _ATTRIBUTES | {"previousstatus"}
    assert event["type"] == "absorb.course_enrollment.status_changed"
    assert (event["status"], event["previousstatus"]) == ("Complete", "InProgress")
    assert event["time"] == "2024-05-02T09:00:00Z"
    assert _RFC3339_UTC.match(event["time"])
    assert event["data"]["current"]["status"] == 3
    assert event["data"]["previous"]["status"] == 1
    assert event["data"]["previous"]["dateEdited"] == "2024-05-01T10:00:00.123456Z"
    assert "status" in event["data"]["changed"]


def test_removed_event_reports_the_last_known_state() -> None:
    """A removed event has previousstatus, the snapshot's time and a null data.current."""
    event = cloud_event(SOURCE, removed(Kind.attempt, RID, _stored(_obs())))
    assert set(event) == _ATTRIBUTES | {"previousstatus"}
    assert event["type"] == "absorb.attempt.removed"
    assert event["status"] == event["previousstatus"] == "InProgress"
    assert event["time"] == "2024-05-01T10:00:00.123456Z"
    assert event["data"]["current"] is None
    assert event["data"]["previous"]["progress"] == 40.0


def test_event_ids_are_deterministic() -> None:
    """The same change seen twice gets the same 32-hex id; the event carries it."""
    first = _status_change(status=3)
    again = _status_change(status=3)
    assert event_id(SOURCE, first) == event_id(SOURCE, again)
    assert re.fullmatch(r"[0-9a-f]{32}", event_id(SOURCE, first))
    assert cloud_event(SOURCE, first)["id"] == event_id(SOURCE, first)


@pytest.mark.parametrize(
    ("source", "changes"),
    [
        (SOURCE, {"status": 5}),
        (SOURCE, {"status": 3, "id": "6c3e9a1b-2f4d-4e8a-9b7c-1d2e3f4a5b6c"}),
        (SOURCE, {"status": 3, "dateEdited": "2024-05-03T00:00:00Z"}),
        ("https://other.example.com", {"status": 3}),
    ],
)
def test_event_ids_differ_between_changes(source: str, changes: dict[str, Any]) -> None:
    """A different status, subject, time or source gives a different id."""
    assert event_id(source, _status_change(**changes)) != event_id(SOURCE, _status_change(status=3))


@pytest.mark.parametrize("status", list(Status))
def test_status_name_of_every_status(status: Status) -> None:
    """Every Absorb status is named by its Absorb name."""
    assert status_name(int(status)) == status.name


def test_status_name_of_unknown_and_missing() -> None:
    """A status Absorb added later is `Unknown(N)`; no status is None."""
    assert status_name(99) == "Unknown(99)"
    assert status_name(-1) == "Unknown(-1)"
    assert status_name(None) is None


# ---- routes --------------------------------------------------------------------------------

_EVENT = {
    "type": "absorb.course_enrollment.status_changed",
    "status": "Complete",
    "previousstatus": "InProgress",
}


def test_empty_route_matches_everything() -> None:
    """A route without filters takes every event."""
    assert Route(sinks=("a",)).matches(_EVENT, feed="courses", course_id=COURSE)
    assert Route(sinks=("a",)).matches({}, feed="", course_id="")


@pytest.mark.parametrize(
    ("field", "hit", "miss"),
    [
        ("types", "absorb.course_enrollment.status_changed", "absorb.course_enrollment.created"),
        ("statuses", "Complete", "Failed"),
        ("previous_statuses", "InProgress", "NotStarted"),
        ("course_ids", COURSE, "6c3e9a1b-2f4d-4e8a-9b7c-1d2e3f4a5b6c"),
        ("feeds", "courses", "lessons"),
    ],
)
def test_each_filter(field: str, hit: str, miss: str) -> None:
    """Each filter lets through the events it names and no others."""
    kwargs: dict[str, Any] = {"feed": "courses", "course_id": COURSE.upper()}
    assert Route(sinks=("a",), **{field: frozenset({hit})}).matches(_EVENT, **kwargs)
    assert not Route(sinks=("a",), **{field: frozenset({miss})}).matches(_EVENT, **kwargs)
    assert Route(sinks=("a",), **{field: frozenset({hit, miss})}).matches(_EVENT, **kwargs)


def test_previous_status_filter_excludes_created() -> None:
    """A previous-status filter drops events that have no previous status."""
    route = Route(sinks=("a",), previous_statuses=frozenset({"InProgress"}))
    assert not route.matches({"status": "InProgress"}, feed="courses", course_id=COURSE)


def test_sinks_for_unions_matching_routes() -> None:
    """An event reaches every sink of every route it matches, once each."""
    routes = [
        Route(sinks=("all", "audit")),
        Route(sinks=("done", "audit"), statuses=frozenset({"Complete"})),
        Route(sinks=("failed",), statuses=frozenset({"Failed"})),
        Route(sinks=("lessons",), feeds=frozenset({"lessons"})),
    ]
    found = sinks_for(routes, _EVENT, feed="courses", course_id=COURSE)
    assert found == {"all", "audit", "done"}
    assert sinks_for([], _EVENT, feed="courses", course_id=COURSE) == set()


# ---- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("30", 30.0),
        ("1.5", 1.5),
        (" 2.5 s ", 2.5),
        (45, 45.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    """Every accepted form gives its number of seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-5s", -1, -0.5, "", "soon", "5x", "5 minutes", "1e3", "s"])
def test_parse_duration_refuses(text: str | float) -> None:
    """Negative durations and anything else are a ValueError."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# ---- feeds ---------------------------------------------------------------------------------


def test_observe_reads_a_course_enrollment() -> None:
    """A valid record is read into an Observation, Absorb's zone-less 7-digit times as UTC."""
    raw = _enrollment(id=RID.upper(), status=3, progress=100, dateCompleted="2024-05-01T09:30:00")
    seen = observe(Kind.course_enrollment, raw)
    assert seen.raw is raw
    assert (seen.kind, seen.id, seen.course_id) == (Kind.course_enrollment, RID, COURSE)
    assert (seen.status, seen.progress, seen.score, seen.is_active) == (3, 100.0, 0.0, True)
    assert seen.date_edited == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert seen.date_completed == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    assert seen.time == seen.date_edited


def test_observe_reads_a_status_outside_the_enum_as_a_new_status() -> None:
    """A status Absorb added is read as its number, and its events name it `Unknown(N)`."""
    seen = observe(Kind.course_enrollment, _enrollment(status=42))
    assert seen.status == 42
    (change,) = diff(_stored(_obs()), seen, emit_created=False, progress_events=False).changes
    event = cloud_event(SOURCE, change)
    assert (event["status"], event["previousstatus"]) == ("Unknown(42)", "InProgress")


def test_a_status_beyond_the_snapshot_byte_is_named_as_sent_and_kept_as_out_of_range() -> None:
    """Status 300: the event names it; the snapshot keeps 254, named `Unknown(out of range)`."""
    seen = observe(Kind.course_enrollment, _enrollment(status=300))
    (change,) = diff(_stored(_obs()), seen, emit_created=False, progress_events=False).changes
    assert cloud_event(SOURCE, change)["status"] == "Unknown(300)"
    kept = _stored(seen)
    assert kept.status == 254
    (back,) = diff(kept, _obs(status=3), emit_created=False, progress_events=False).changes
    assert cloud_event(SOURCE, back)["previousstatus"] == "Unknown(out of range)"


def test_observe_refuses_a_status_that_is_not_a_whole_number() -> None:
    """A status of the wrong type is Unreadable, naming the record and the field."""
    with pytest.raises(Unreadable, match="status") as caught:
        observe(Kind.course_enrollment, _enrollment(status="done"))
    assert caught.value.record_id == RID


@pytest.mark.parametrize("rid", [None, "", 42, "ab\ud83d"])
def test_observe_refuses_a_record_without_a_usable_id(rid: Any) -> None:
    """A null, empty, non-string or broken-text id is Unreadable, with no id to key it by."""
    with pytest.raises(Unreadable) as caught:
        observe(Kind.course_enrollment, _enrollment(id=rid))
    assert caught.value.record_id is None
    assert caught.value.category == "bad_id"


@pytest.mark.parametrize(
    "changes",
    [
        {"progress": 1e39, "score": float("nan")},
        {"progress": float("-inf"), "score": -5},
        {"progress": 10**30},
        {"dateEdited": "9999-12-31T23:59:59.9999999-05:00"},
        {"dateEdited": "0001-01-01T00:00:00+01:00", "dateCompleted": "0001-01-01T00:00:00"},
        {"fullName": "Ada \ud83d", "courseName": "\udc00 First Aid"},
    ],
)
def test_hostile_values_make_an_event_that_is_valid_json(changes: dict[str, Any]) -> None:
    """Out-of-range numbers, extreme dates and lone surrogates: the event encodes, as UTF-8 JSON.

    `data.current` keeps every field as sent, except that a lone surrogate becomes
    U+FFFD and a number JSON cannot carry becomes null.
    """
    seen = observe(Kind.course_enrollment, _enrollment(**changes))
    (change,) = diff(None, seen, emit_created=True, progress_events=False).changes
    event = cloud_event(SOURCE, change)
    text = encode(event)
    decoded = json.loads(text.decode("utf-8"))
    assert decoded["id"] == event["id"]
    for name, value in changes.items():
        got = decoded["data"]["current"][name]
        if isinstance(value, str):
            assert got == value.replace("\ud83d", "\ufffd").replace("\udc00", "\ufffd")
        elif isinstance(value, float) and not math.isfinite(value):
            assert got is None
        else:
            assert got == value
    assert len(seen.snapshot().pack()) == 35


@pytest.mark.parametrize("raw", [[1, 2], "record", None, 7])
def test_observe_refuses_a_non_object(raw: Any) -> None:
    """Something that is not a JSON object is Unreadable, without a record id."""
    with pytest.raises(Unreadable) as caught:
        observe(Kind.course_enrollment, raw)
    assert caught.value.record_id is None


def test_attempt_time_is_completion_or_start() -> None:
    """An attempt's time is its completionDate, else its startDate, else the fallback."""
    start, end = "2024-05-01T10:00:00", "2024-05-01T10:20:00.5Z"
    fallback = datetime(2024, 1, 1, tzinfo=UTC)
    done = observe(
        Kind.attempt,
        {"id": RID, "status": 3, "score": 90, "startDate": start, "completionDate": end},
        fallback_time=fallback,
    )
    assert done.time == datetime(2024, 5, 1, 10, 20, 0, 500000, tzinfo=UTC)
    assert (done.date_edited, done.date_completed, done.status) == (None, done.time, 3)
    going = observe(Kind.attempt, {"id": RID, "status": 1, "startDate": start})
    assert going.time == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    bare = observe(Kind.attempt, {"id": RID}, fallback_time=fallback)
    assert bare.time == fallback


@pytest.mark.parametrize(
    ("spec", "keys"),
    [
        (
            FeedSpec("c", "course_enrollments", course_ids=(COURSE, RID)),
            [f"course:{COURSE}", f"course:{RID}"],
        ),
        (FeedSpec("l", "lesson_enrollments", lessons=((COURSE, "l1"),)), [f"lesson:{COURSE}:l1"]),
        (
            FeedSpec("s", "session_enrollments", sessions=((COURSE, "s1"), (RID, "s2"))),
            [f"session:{COURSE}:s1", f"session:{RID}:s2"],
        ),
        (FeedSpec("u", "user_enrollments", user_ids=("u1", "u2")), ["user:u1", "user:u2"]),
    ],
)
def test_static_scopes(spec: FeedSpec, keys: list[str]) -> None:
    """A feed that names its scopes gets one scope each, keyed by what it names."""
    scopes = static_scopes(spec)
    assert scopes is not None
    assert [s.key for s in scopes] == keys
    assert all(s.feed is spec for s in scopes)
    assert str(scopes[0]) == f"{spec.name}/{keys[0]}"


def test_static_scopes_kinds_and_courses() -> None:
    """Lesson scopes sweep lesson enrollments of their course; user scopes have no course."""
    (lesson,) = static_scopes(FeedSpec("l", "lesson_enrollments", lessons=((COURSE, "l1"),))) or []
    assert (lesson.kind, lesson.course_id) == (Kind.lesson_enrollment, COURSE)
    assert lesson.ids == {"course_id": COURSE, "lesson_id": "l1"}
    (user,) = static_scopes(FeedSpec("u", "user_enrollments", user_ids=("u1",))) or []
    assert (user.kind, user.course_id, user.ids) == (
        Kind.course_enrollment,
        None,
        {"user_id": "u1"},
    )


def test_course_feed_without_course_ids_is_discovered() -> None:
    """A course feed that names no courses has no static scopes: they are discovered."""
    assert static_scopes(FeedSpec("c", "course_enrollments")) is None


def test_tracked_fields_follow_the_snapshot_layout() -> None:
    """changed_fields() compares snapshots by position: the tracked names must line up."""
    from bridge.diff import _TRACKED

    assert tuple(attr for attr, _ in _TRACKED) == Snapshot._fields[1:7]


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)
    | st.sampled_from(
        [
            "9999-12-31T23:59:59.9999999-05:00",
            "0001-01-01T00:00:00+14:00",
            "9999999999.00:00:00",
            "-10675199.02:48:05",
            "1e39",
            "\ud83d",
            "",
        ]
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_FIELDS = [*_enrollment(), "timeSpent", "timeSpentTicks", "credits", "dateDue", "attempts"]


@settings(max_examples=400)
@given(st.sampled_from(list(Kind)), st.dictionaries(st.sampled_from(_FIELDS), _json_values))
def test_any_record_is_read_or_refused_and_whatever_is_read_packs_and_encodes(
    kind: Kind, forced: dict[str, Any]
) -> None:
    """Whatever a field holds, observe() reads the record or raises Unreadable, nothing else.

    A record it reads always packs into a snapshot and makes an event that is UTF-8 JSON.
    """
    raw = {**_enrollment(), **forced}
    try:
        seen = observe(kind, raw)
    except Unreadable:
        return
    assert len(seen.snapshot().pack()) == 35
    (change,) = diff(None, seen, emit_created=True, progress_events=False).changes
    json.loads(encode(cloud_event(SOURCE, change)).decode("utf-8"))
