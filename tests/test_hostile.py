"""A hostile tenant: records no sweep may choke on, against a real Redis and the simulator.

Each case forces one record of one course into something Absorb can really send
(through the simulator's control API, raw JSON text where Python cannot hold it),
changes ordinary records in that course and in another, and sweeps every course
as the daemon would. The record is handled as the README's "Hostile records" says;
every ordinary change arrives; quarantine or a metric shows the record; and a full
resync reports no removal.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import TypeAdapter

from bridge import metrics
from bridge.absorb.client import _raw_page
from bridge.absorb.models import Status
from bridge.config.values import StatusName
from bridge.errors import AbsorbResponseError
from bridge.feeds import FeedSpec, Scope, course_scope, discover_scopes
from bridge.keys import snapshot_buckets
from bridge.routes import Route, sinks_for
from bridge.simulator.records import CourseEnrollmentRec
from bridge.snapshots import Snapshot, bucket_of, field_key
from bridge.sweep import to_us
from tests.conftest import MakeClient, SimHandle, StartSimulator
from tests.engine import Engine, make_engine

FEED = FeedSpec(
    name="hostile",
    resource="course_enrollments",
    lookback_s=0,
    details=frozenset({"lessons", "chapters"}),
)
_CYCLE = (Status.InProgress, Status.Complete, Status.NotComplete, Status.Failed)


@dataclass
class Tenant:
    """The swept tenant: its engine, the hostile record's scope and everything it emitted."""

    sim: SimHandle
    engine: Engine
    scopes: list[Scope]
    home: Scope
    bad: CourseEnrollmentRec
    events: list[dict[str, Any]] = field(default_factory=list)
    metrics_before: dict[tuple[str, str], float] = field(default_factory=dict)

    def of(self, rec: CourseEnrollmentRec) -> list[dict[str, Any]]:
        """Events about one enrollment, in outbox order."""
        return [e for e in self.events if e["subject"] == rec.id]

    async def sweep_all(self, *, full: bool = False) -> None:
        """Sweep every course once, as the scheduler would, and collect the new events."""
        for scope in self.scopes:
            await self.engine.sweep(scope, full=full)
        self.events += await self.engine.new_events()

    async def quarantine(self) -> dict[str, dict[str, Any]]:
        """Quarantine entries of the feed, decoded."""
        held = await self.engine.store.quarantined(FEED.name)
        return {k: json.loads(v) for k, v in held.items()}

    def counted(self, name: str, label: str) -> float:
        """How much a labelled counter of the feed grew since the tenant was baselined."""
        now = _sample(name, label)
        return now - self.metrics_before.get((name, label), 0.0)

    async def snapshot(self, rec: CourseEnrollmentRec) -> Snapshot:
        """The snapshot the bridge keeps of a course enrollment of the home course."""
        store = self.engine.store
        state = await store.scope_state(FEED.name, self.home.key)
        prefix = snapshot_buckets(store.prefix, FEED.name, self.home.key)
        bucket = bucket_of(rec.id, int(state["buckets"]))
        (value,) = await store.read_snapshots(prefix, [(bucket, field_key(rec.id))])
        assert value is not None
        return Snapshot.unpack(value)


def _sample(name: str, label: str) -> float:
    key = "status" if name == "unknown_statuses" else "category"
    value = metrics.REGISTRY.get_sample_value(
        f"absorb_bridge_{name}_total", {"feed": FEED.name, key: label}
    )
    return value or 0.0


def _next(rec: CourseEnrollmentRec) -> int:
    return int(next(s for s in _CYCLE if s != rec.status))


async def _set_status(sim: SimHandle, rec: CourseEnrollmentRec, status: int) -> None:
    await sim.control("PATCH", f"records/{rec.id}", {"set": {"status": status}})


async def _tenant(start_simulator: StartSimulator, make_client: MakeClient, redis: Any) -> Tenant:
    sim = await start_simulator(users=30, courses=3, ilc_ratio=0.0, approval_ratio=0.0)
    engine = make_engine(sim, make_client(sim.url, page_size=8), redis, page_size=8)
    tenant = sim.sim.tenant
    courses = sorted(tenant.by_course, key=lambda c: -len(tenant.by_course[c]))
    scopes = [course_scope(FEED, c) for c in courses]
    home = scopes[0]
    bad = next(
        e
        for e in tenant.by_course[courses[0]].values()
        if isinstance(e, CourseEnrollmentRec) and e.is_active and e.lessons
    )
    t = Tenant(sim, engine, scopes, home, bad)
    await t.sweep_all()  # the baseline
    t.metrics_before = {
        (n, label): _sample(n, label)
        for n, label in [
            ("unknown_statuses", "13"),
            ("unknown_statuses", "300"),
            ("quarantined_records", "bad_field"),
            ("quarantined_records", "bad_id"),
            ("quarantined_records", "drill_down"),
        ]
    }
    return t


def _ordinary(t: Tenant) -> list[CourseEnrollmentRec]:
    """One more enrollment of the hostile record's course, and one of another course."""
    tenant = t.sim.sim.tenant
    picked = []
    for scope in t.scopes[:2]:
        picked.append(
            next(
                e
                for e in tenant.by_course[scope.course_id or ""].values()
                if isinstance(e, CourseEnrollmentRec) and e.is_active and e is not t.bad
            )
        )
    return picked


Check = Callable[[Tenant], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    """One hostile record: the control call that makes it, and what must then hold."""

    patch: Callable[[CourseEnrollmentRec], dict[str, Any]]
    check: Check


def _changed(**extra: Any) -> Callable[[CourseEnrollmentRec], dict[str, Any]]:
    """A status change of the record, with `extra` forced into its JSON."""
    return lambda rec: {"set": {"status": _next(rec)}, **extra}


def _stamped(**extra: Any) -> Callable[[CourseEnrollmentRec], dict[str, Any]]:
    """An edit of the record (a new `dateEdited`), with `extra` forced into its JSON."""
    return lambda rec: {"set": {"progress": 7}, **extra}


async def _one_status_change(t: Tenant) -> dict[str, Any]:
    (event,) = [e for e in t.of(t.bad) if e["type"].endswith("status_changed")]
    assert not await t.quarantine()
    return event


async def _check_huge_progress(t: Tenant) -> None:
    event = await _one_status_change(t)
    assert event["data"]["current"]["progress"] == 1e39  # as Absorb sent it
    assert (await t.snapshot(t.bad)).progress == 3.4028234663852886e38  # float32's largest


async def _check_nan_and_negative(t: Tenant) -> None:
    event = await _one_status_change(t)
    assert event["data"]["current"]["score"] is None  # JSON has no NaN
    assert event["data"]["current"]["progress"] == -12.5
    kept = await t.snapshot(t.bad)
    assert (kept.score, kept.progress) == (None, -12.5)


async def _check_huge_integer(t: Tenant) -> None:
    event = await _one_status_change(t)
    # Read as the nearest double, as Absorb's replies are decoded.
    assert event["data"]["current"]["score"] == float(123456789012345678901234567890)


async def _check_unknown_status(t: Tenant) -> None:
    event = await _one_status_change(t)
    assert event["status"] == "Unknown(13)"
    assert t.counted("unknown_statuses", "13") == 1


async def _check_out_of_range_status(t: Tenant) -> None:
    event = await _one_status_change(t)
    assert event["status"] == "Unknown(300)"
    assert t.counted("unknown_statuses", "300") == 1
    assert (await t.snapshot(t.bad)).status == 254


async def _check_future_date(t: Tenant) -> None:
    event = await _one_status_change(t)
    assert event["time"].startswith("9999-12-31T23:59:59")
    state = await t.engine.store.scope_state(FEED.name, t.home.key)
    absorb_now = t.sim.sim.clock.now()
    assert int(state["watermark"]) <= to_us(absorb_now)  # lookback 0: Absorb's "now" at most


async def _check_past_date(t: Tenant) -> None:
    # An incremental sweep asks for what was edited since the watermark, so only the
    # full sweep reads it; its change is then diffed as usual.
    event = await _one_status_change(t)
    assert event["time"] == "0001-01-01T00:00:00Z"
    state = await t.engine.store.scope_state(FEED.name, t.home.key)
    assert int(state["watermark"]) > to_us(datetime(2000, 1, 1, tzinfo=UTC))


async def _check_zone_past_utc(t: Tenant) -> None:
    await _one_status_change(t)
    assert (await t.snapshot(t.bad)).date_completed == datetime.min.replace(tzinfo=UTC)


async def _check_lone_surrogate(t: Tenant) -> None:
    event = await _one_status_change(t)
    assert event["data"]["current"]["fullName"] == "Ada \ufffd"  # repaired in the event


async def _check_not_utf8(t: Tenant) -> None:
    event = await _one_status_change(t)
    assert event["data"]["current"]["fullName"] == "Ada \ufffd\ufffd\ufffd\ufffd"


async def _check_duplicate(t: Tenant) -> None:
    await _one_status_change(t)


async def _quarantined(t: Tenant, category: str) -> dict[str, Any]:
    """The one quarantine entry; the record made no event and was counted."""
    assert not t.of(t.bad)
    (entry,) = (await t.quarantine()).values()
    assert t.counted("quarantined_records", category) >= 1
    return entry


async def _check_wrong_type(t: Tenant) -> None:
    entry = await _quarantined(t, "bad_field")
    assert '"progress": "lots"' in entry["raw"]
    assert f"{t.home.key}|{t.bad.id}" in await t.quarantine()
    await t.snapshot(t.bad)  # present but unreadable: its snapshot is kept


def _check_bad_id(raw_text: str) -> Check:
    async def check(t: Tenant) -> None:
        entry = await _quarantined(t, "bad_id")
        assert raw_text in entry["raw"]  # the text that came

    return check


def _check_drill_down(fault: str) -> Check:
    async def check(t: Tenant) -> None:
        await _one_status_change_with_pending(t, fault)
        # A lesson completed while the drill-down could not be read is announced once
        # Absorb answers again: the pending drill-down is tried on the next sweep.
        lesson = t.bad.lessons[0]
        await t.sim.control("PATCH", f"records/{lesson.id}", {"set": {"status": 3}})
        await t.sweep_all()
        assert not [e for e in t.events if e["subject"] == lesson.id]
        await t.sim.control("PATCH", f"records/{t.bad.id}", {"drill_down": None})
        await t.sweep_all()
        assert await t.quarantine() == {}
        (event,) = [e for e in t.events if e["subject"] == lesson.id]
        assert (event["type"], event["status"]) == ("absorb.lesson_enrollment.created", "Complete")

    return check


async def _one_status_change_with_pending(t: Tenant, fault: str) -> None:
    (event,) = [e for e in t.of(t.bad) if e["type"].endswith("status_changed")]
    assert event["subject"] == t.bad.id
    held = await t.quarantine()
    assert list(held) == [f"{t.home.key}|drill-down:{t.bad.id}"]
    assert "drill-down pending" in held[f"{t.home.key}|drill-down:{t.bad.id}"]["error"]
    assert {"404": "404", "not_array": "array", "empty": "empty"}[fault] in str(held)
    assert t.counted("quarantined_records", "drill_down") >= 1


CASES = {
    "progress 1e39": Case(_changed(raw_json={"progress": "1e39"}), _check_huge_progress),
    "NaN and negative": Case(
        _changed(raw_json={"score": "NaN", "progress": "-12.5"}), _check_nan_and_negative
    ),
    "30-digit integer": Case(
        _changed(raw_json={"score": "123456789012345678901234567890"}), _check_huge_integer
    ),
    "status 13": Case(_stamped(raw_json={"status": "13"}), _check_unknown_status),
    "status 300": Case(_stamped(raw_json={"status": "300"}), _check_out_of_range_status),
    "dateEdited 9999": Case(
        lambda rec: {"set": {"status": _next(rec), "dateEdited": "9999-12-31T23:59:59.9999999"}},
        _check_future_date,
    ),
    "dateEdited 0001": Case(
        lambda rec: {"set": {"status": _next(rec), "dateEdited": "0001-01-01T00:00:00"}},
        _check_past_date,
    ),
    "0001 east of UTC": Case(
        _changed(raw_json={"dateCompleted": '"0001-01-01T00:00:00+01:00"'}), _check_zone_past_utc
    ),
    "lone surrogate": Case(_changed(raw_json={"fullName": '"Ada \\ud83d"'}), _check_lone_surrogate),
    # \udcXX is how the simulator is told to send the raw byte XX (surrogateescape).
    "bytes that are not UTF-8": Case(
        _changed(raw_json={"fullName": '"Ada \udcff\udced\udca0\udcbd"'}), _check_not_utf8
    ),
    "duplicate id": Case(_changed(duplicate=True), _check_duplicate),
    "wrong type": Case(_stamped(raw={"progress": "lots"}), _check_wrong_type),
    "null id": Case(_stamped(raw={"id": None}), _check_bad_id('"id": null')),
    "missing id": Case(_stamped(raw_json={"id": ""}), _check_bad_id('"courseId"')),
    "id with a lone surrogate": Case(
        _stamped(raw_json={"id": '"\\udc00"'}), _check_bad_id("\\udc00")
    ),
    "drill-down not an array": Case(
        _changed(drill_down="not_array"), _check_drill_down("not_array")
    ),
    "drill-down empty body": Case(_changed(drill_down="empty"), _check_drill_down("empty")),
    "drill-down 404": Case(_changed(drill_down="404"), _check_drill_down("404")),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_a_hostile_record_is_handled_and_every_other_change_arrives(
    name: str, start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """One hostile record: handled as documented, shown, and nothing else is held up.

    Changes before and after it, in its course and in another, arrive in order; a
    full resync reports no removal.
    """
    case = CASES[name]
    t = await _tenant(start_simulator, make_client, redis)
    same, other = _ordinary(t)
    await t.sim.control("PATCH", f"records/{t.bad.id}", case.patch(t.bad))
    wanted: dict[str, list[str]] = {same.id: [], other.id: []}
    for _ in range(2):  # before the hostile record is read, and after
        for rec in (same, other):
            status = _next(rec)
            await _set_status(t.sim, rec, status)
            wanted[rec.id].append(Status(status).name)
        await t.sweep_all()
    await t.sweep_all(full=True)
    assert [e for e in t.events if e["type"].endswith(".removed")] == []
    for rec in (same, other):
        got = [e["status"] for e in t.of(rec) if e["type"].endswith("status_changed")]
        assert got == wanted[rec.id]
    await case.check(t)


async def test_one_malformed_course_never_stops_discovery(
    start_simulator: StartSimulator, make_client: MakeClient
) -> None:
    """Courses with a wrong-typed field, a null id or a broken-text id are skipped and counted."""
    sim = await start_simulator(users=10, courses=6)
    client = make_client(sim.url, page_size=2)
    feed = FeedSpec(name="discovery", resource="course_enrollments")
    courses = list(sim.sim.tenant.courses)
    forced = [{"raw": {"courseType": 5}}, {"raw": {"id": None}}, {"raw_json": {"id": '"\\ud83d"'}}]
    for course, body in zip(courses, forced, strict=False):
        await sim.control("PATCH", f"courses/{course}", body)
    before = metrics.REGISTRY.get_sample_value(
        "absorb_bridge_quarantined_records_total", {"feed": "discovery", "category": "course"}
    )
    scopes = await discover_scopes(feed, client)
    assert sorted(s.course_id or "" for s in scopes) == sorted(courses[3:])
    after = metrics.REGISTRY.get_sample_value(
        "absorb_bridge_quarantined_records_total", {"feed": "discovery", "category": "course"}
    )
    assert (after or 0) - (before or 0) == 3


def test_routes_and_config_take_the_name_of_a_new_status() -> None:
    """`Unknown(13)` passes a route's `statuses` filter and the config's status check."""
    route = Route(sinks=("hr",), statuses=frozenset({"Unknown(13)"}))
    event = {"type": "absorb.course_enrollment.status_changed", "status": "Unknown(13)"}
    assert sinks_for([route], event, feed="f", course_id="c") == {"hr"}
    assert sinks_for([route], {**event, "status": "Complete"}, feed="f", course_id="c") == set()
    names: TypeAdapter[str] = TypeAdapter(StatusName)
    assert names.validate_python("Unknown(13)") == "Unknown(13)"
    assert names.validate_python("Unknown(out of range)") == "Unknown(out of range)"
    with pytest.raises(ValueError, match="unknown status"):
        names.validate_python("Unknown(thirteen)")


@pytest.mark.parametrize(
    ("counters", "total", "returned"),
    [
        ({"totalItems": 7, "returnedItems": 2, "limit": 2, "offset": 1}, 7, 2),
        ({"totalItems": None, "returnedItems": "2", "limit": 2.0, "offset": 1}, 5, 2),
        ({"totalItems": "lots", "limit": True}, 5, 2),
        ({"totalItems": -3, "returnedItems": -1}, 5, 2),
    ],
)
def test_a_page_is_read_by_its_array_whatever_its_counters_say(
    counters: dict[str, Any], total: int, returned: int
) -> None:
    """Missing or wrong counters are taken from the request; an unknown total pages on."""
    page = _raw_page(
        {"enrollments": [{"id": "a"}, {"id": "b"}], **counters},
        "enrollments",
        "GET /x",
        [],
        limit=2,
        offset=1,
    )
    assert (page.total_items, page.returned_items, page.limit, page.offset) == (
        total,
        returned,
        2,
        1,
    )
    assert page.items == [{"id": "a"}, {"id": "b"}]


def test_a_null_array_is_an_empty_page_and_a_missing_one_an_error() -> None:
    """`"enrollments": null` is an empty page; no array at all, or an object, names the key."""
    empty = _raw_page(
        {"enrollments": None, "totalItems": 0}, "enrollments", "GET /x", [], limit=5, offset=0
    )
    assert (empty.items, empty.total_items) == ([], 0)
    for body in ({"totalItems": 0}, {"enrollments": {"id": "a"}}):
        with pytest.raises(AbsorbResponseError, match="'enrollments' is"):
            _raw_page(body, "enrollments", "GET /x", [], limit=5, offset=0)
