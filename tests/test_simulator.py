"""The simulator keeps Absorb's rules, checked with raw HTTP rather than through the client."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.absorb.timefmt import parse_datetime
from bridge.simulator.generate import TenantSpec, generate
from bridge.simulator.records import User
from bridge.simulator.simclock import SimClock
from tests.conftest import API_KEY, PASSWORD, USERNAME, SimHandle

HEADERS = {"x-api-key": API_KEY, "x-api-version": "2"}


async def _login(sim: SimHandle) -> str:
    body = {"username": USERNAME, "password": PASSWORD, "privateKey": API_KEY}
    async with sim.http.post(f"{sim.url}/authenticate", json=body, headers=HEADERS) as r:
        assert r.status == 200
        token: str = await r.json()
        return token


async def _get(sim: SimHandle, path: str, token: str | None, **headers: str) -> tuple[int, Any]:
    h = {**HEADERS, **({"Authorization": f"Bearer {token}"} if token else {}), **headers}
    async with sim.http.get(f"{sim.url}{path}", headers=h) as r:
        return r.status, await r.json(content_type=None)


def _course(sim: SimHandle) -> str:
    return max(sim.sim.tenant.by_course, key=lambda c: len(sim.sim.tenant.by_course[c]))


async def test_authenticate_replies_with_a_bare_json_string(simulator: SimHandle) -> None:
    """The token comes back as a JSON string, not an object."""
    token = await _login(simulator)
    assert isinstance(token, str)
    assert len(token) > 20


async def test_a_new_token_invalidates_the_previous_one(simulator: SimHandle) -> None:
    """Only one token per admin user: the first stops working when the second is issued."""
    first = await _login(simulator)
    assert (await _get(simulator, "/courses", first))[0] == 200
    second = await _login(simulator)
    assert (await _get(simulator, "/courses", first))[0] == 401
    assert (await _get(simulator, "/courses", second))[0] == 200


@pytest.mark.parametrize(
    ("headers", "token", "status"),
    [
        ({}, None, 401),
        ({}, "not-a-token", 401),
        ({"x-api-key": "wrong"}, "valid", 401),
        ({"x-api-version": "1"}, "valid", 400),
    ],
)
async def test_requests_without_proper_credentials_are_refused(
    simulator: SimHandle, headers: dict[str, str], token: str | None, status: int
) -> None:
    """Missing or wrong token, wrong API key, or the wrong API version are refused."""
    valid = await _login(simulator)
    real = valid if token == "valid" else token
    assert (await _get(simulator, "/courses", real, **headers))[0] == status


async def test_wrong_password_is_refused(simulator: SimHandle) -> None:
    """`/authenticate` answers 401 to a wrong password or private key."""
    for body in (
        {"username": USERNAME, "password": "nope", "privateKey": API_KEY},
        {"username": USERNAME, "password": PASSWORD, "privateKey": "nope"},
    ):
        async with simulator.http.post(
            f"{simulator.url}/authenticate", json=body, headers=HEADERS
        ) as r:
            assert r.status == 401


async def test_token_expires_after_its_lifetime(simulator: SimHandle) -> None:
    """A token older than four hours of simulated time answers 401."""
    token = await _login(simulator)
    await simulator.control("POST", "clock", {"advance_s": 4 * 3600 - 60})
    assert (await _get(simulator, "/courses", token))[0] == 200
    await simulator.control("POST", "clock", {"advance_s": 120})
    assert (await _get(simulator, "/courses", token))[0] == 401


async def test_pages_use_offset_as_a_page_index(start_simulator: Any) -> None:
    """`_offset=2&_limit=5` is records 10..14 of the collection, with Absorb's page wrapper."""
    simulator = await start_simulator(users=100, enrollment_ratio=0.8)
    token = await _login(simulator)
    course = _course(simulator)
    _, whole = await _get(simulator, f"/courses/{course}/enrollments?_limit=1000&_sort=id", token)
    _, page = await _get(
        simulator, f"/courses/{course}/enrollments?_limit=5&_offset=2&_sort=id", token
    )
    assert page["totalItems"] == whole["totalItems"] == len(whole["enrollments"])
    assert (page["returnedItems"], page["limit"], page["offset"]) == (5, 5, 2)
    assert [e["id"] for e in page["enrollments"]] == [e["id"] for e in whole["enrollments"][10:15]]


async def test_default_page_size_is_20(simulator: SimHandle) -> None:
    """Without `_limit` a page holds 20 records, as Absorb's does."""
    token = await _login(simulator)
    _, page = await _get(simulator, f"/courses/{_course(simulator)}/enrollments", token)
    assert page["limit"] == 20
    assert page["returnedItems"] == min(20, page["totalItems"])


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("_limit=1001", "_limit: 1001 is out of range 1..1000"),
        ("_offset=65536", "_offset: 65536 is out of range 0..65535"),
        ("_filter=status eq", "position"),
        ("_filter=nosuchfield eq 1", "nosuchfield"),
        ("_filter=id eq 'abc'", "guid"),
        ("_sort=-nosuchfield", "nosuchfield"),
        ("modifiedSince=yesterday", "modifiedSince"),
    ],
)
async def test_bad_queries_get_a_400_that_says_why(
    simulator: SimHandle, query: str, message: str
) -> None:
    """Out-of-range paging and bad `_filter`/`_sort` are 400s naming the problem."""
    token = await _login(simulator)
    status, body = await _get(
        simulator, f"/courses/{_course(simulator)}/enrollments?{query}", token
    )
    assert status == 400
    assert message in body["message"]


async def test_timestamps_look_like_absorbs(simulator: SimHandle) -> None:
    """Seven fractional digits and no zone, read as UTC; timeSpent as a TimeSpan string."""
    token = await _login(simulator)
    _, page = await _get(simulator, f"/courses/{_course(simulator)}/enrollments?_limit=1", token)
    record = page["enrollments"][0]
    stamp = record["dateEdited"]
    assert len(stamp.split(".")[1]) == 7
    assert not stamp.endswith("Z")
    assert parse_datetime(stamp).tzinfo is not None
    assert ":" in record["timeSpent"]


async def test_plain_arrays_where_absorb_returns_arrays(simulator: SimHandle) -> None:
    """User-scoped lesson and chapter lists are bare arrays, not pages."""
    token = await _login(simulator)
    ce = next(e for e in simulator.sim.tenant.enrollments.values() if e.lessons)
    status, body = await _get(
        simulator, f"/users/{ce.user.id}/enrollments/{ce.course.id}/lessons", token
    )
    assert status == 200
    assert isinstance(body, list)
    assert {le["id"] for le in body} == {le.id for le in ce.lessons}


async def test_mutation_while_paging_shifts_pages_under_a_naive_reader(
    simulator: SimHandle,
) -> None:
    """With the fault on, paging a dateEdited-sorted list by offset misses records, as on Absorb."""
    token = await _login(simulator)
    course = _course(simulator)
    expected = set(simulator.sim.tenant.by_course[course])
    await simulator.set_faults(mutate_while_paging=3)
    seen: set[str] = set()
    offset = 0
    while True:
        path = f"/courses/{course}/enrollments?_limit=5&_offset={offset}&_sort=dateEdited"
        _, page = await _get(simulator, path, token)
        seen |= {e["id"] for e in page["enrollments"]}
        if page["returnedItems"] < 5:
            break
        offset += 1
    assert seen < expected  # some records slid onto pages already read


async def test_control_api_forces_a_malformed_record(simulator: SimHandle) -> None:
    """`raw` overrides put values Absorb should never send into a record's JSON."""
    token = await _login(simulator)
    ce = next(iter(simulator.sim.tenant.enrollments.values()))
    await simulator.control("PATCH", f"records/{ce.id}", {"raw": {"status": "banana"}})
    _, body = await _get(simulator, f"/enrollments/{ce.id}", token)
    assert body["status"] == "banana"
    await simulator.control("PATCH", f"records/{ce.id}", {"raw": None})
    _, body = await _get(simulator, f"/enrollments/{ce.id}", token)
    assert body["status"] == ce.status


async def _get_text(sim: SimHandle, path: str, token: str) -> tuple[int, str]:
    h = {**HEADERS, "Authorization": f"Bearer {token}"}
    async with sim.http.get(f"{sim.url}{path}", headers=h) as r:
        return r.status, await r.text()


async def test_control_api_splices_raw_json_text_verbatim(simulator: SimHandle) -> None:
    """`raw_json` texts reach the wire as written: 1e39, a lone surrogate, a left-out field."""
    token = await _login(simulator)
    ce = next(iter(simulator.sim.tenant.enrollments.values()))
    raw_json = {"progress": "1e39", "fullName": '"Ada \\ud83d"', "score": "NaN", "jobTitle": ""}
    await simulator.control("PATCH", f"records/{ce.id}", {"raw_json": raw_json})
    status, text = await _get_text(simulator, f"/enrollments/{ce.id}", token)
    assert status == 200
    assert '"progress":1e39' in text
    assert '"fullName":"Ada \\ud83d"' in text
    assert '"score":NaN' in text
    assert '"jobTitle"' not in text
    await simulator.control("PATCH", f"records/{ce.id}", {"raw": None})
    _, body = await _get(simulator, f"/enrollments/{ce.id}", token)
    assert body["progress"] == ce.progress
    assert "jobTitle" in body


async def test_control_api_refuses_raw_json_that_is_not_text(simulator: SimHandle) -> None:
    """A `raw_json` value must be a string of JSON text; anything else is a 400 naming it."""
    ce = next(iter(simulator.sim.tenant.enrollments.values()))
    url = f"{simulator.url}/_sim/records/{ce.id}"
    async with simulator.http.patch(url, json={"raw_json": {"progress": 5}}) as r:
        assert r.status == 400
        assert "progress" in await r.text()


@pytest.mark.parametrize(
    ("fault", "status", "text"), [("404", 404, None), ("empty", 200, ""), ("not_array", 200, None)]
)
async def test_control_api_breaks_an_enrollments_drill_down_lists(
    simulator: SimHandle, fault: str, status: int, text: str | None
) -> None:
    """`drill_down` makes only that enrollment's lesson, chapter and attempt lists fail."""
    token = await _login(simulator)
    enrollments = [e for e in simulator.sim.tenant.enrollments.values() if e.lessons]
    ce, other = enrollments[0], enrollments[1]
    await simulator.control("PATCH", f"records/{ce.id}", {"drill_down": fault})
    lesson = ce.lessons[0].lesson.id
    for path in (
        f"/users/{ce.user.id}/enrollments/{ce.course.id}/lessons",
        f"/users/{ce.user.id}/enrollments/{ce.course.id}/chapters",
        f"/users/{ce.user.id}/enrollments/{ce.course.id}/lessons/{lesson}/attempts",
    ):
        got, body = await _get_text(simulator, path, token)
        assert got == status
        if text is not None:
            assert body == text
        elif status == 200:
            assert body.startswith("{")
    got, body = await _get_text(
        simulator, f"/users/{other.user.id}/enrollments/{other.course.id}/lessons", token
    )
    assert (got, body[:1]) == (200, "[")
    await simulator.control("PATCH", f"records/{ce.id}", {"drill_down": None})
    got, body = await _get_text(
        simulator, f"/users/{ce.user.id}/enrollments/{ce.course.id}/lessons", token
    )
    assert (got, body[:1]) == (200, "[")


async def test_control_api_lists_a_record_twice(simulator: SimHandle) -> None:
    """`duplicate` lists a course enrollment twice in a row in its course's pages."""
    token = await _login(simulator)
    course = _course(simulator)
    ce = next(iter(simulator.sim.tenant.by_course[course].values()))
    await simulator.control("PATCH", f"records/{ce.id}", {"duplicate": True})
    _, page = await _get(simulator, f"/courses/{course}/enrollments?_limit=1000", token)
    ids = [e["id"] for e in page["enrollments"]]
    assert ids.count(ce.id) == 2
    assert ids.index(ce.id) + 1 == len(ids) - ids[::-1].index(ce.id) - 1


async def test_control_api_forces_a_malformed_course(simulator: SimHandle) -> None:
    """`PATCH /_sim/courses/{id}` puts raw values into that course of `GET /courses`."""
    token = await _login(simulator)
    course = next(iter(simulator.sim.tenant.courses))
    await simulator.control("PATCH", f"courses/{course}", {"raw": {"courseType": 5}})
    _, page = await _get(simulator, "/courses?_limit=1000", token)
    types = {c["id"]: c["courseType"] for c in page["courses"]}
    assert types[course] == 5
    assert all(isinstance(v, str) for k, v in types.items() if k != course)


async def test_replies_carry_absorbs_clock_in_the_date_header(simulator: SimHandle) -> None:
    """The `Date` header is the simulated clock's, so a client learns Absorb's "now" from it."""
    await simulator.control("POST", "clock", {"skew_s": 86_400 * 400})
    token = await _login(simulator)
    h = {**HEADERS, "Authorization": f"Bearer {token}"}
    async with simulator.http.get(f"{simulator.url}/courses", headers=h) as r:
        sent = email.utils.parsedate_to_datetime(r.headers["Date"])
    assert abs((sent - simulator.sim.clock.now()).total_seconds()) < 5
    assert sent.year >= datetime.now(UTC).year + 1


async def test_control_api_sets_status_and_logs_the_change(simulator: SimHandle) -> None:
    """A status set through the control API is stamped and shows in the change log."""
    ce = next(e for e in simulator.sim.tenant.enrollments.values() if e.status != 5)
    before = (await simulator.state())["lastChange"]
    record = await simulator.control("PATCH", f"records/{ce.id}", {"set": {"status": 5}})
    assert record["status"] == 5
    changes = await simulator.control("GET", f"changes?after={before}")
    assert [(c["id"], c["status"]) for c in changes] == [(ce.id, 5)]


async def test_activity_steps_change_records_and_stamp_them(simulator: SimHandle) -> None:
    """Activity moves learners along and each change carries a fresh dateEdited."""
    before = (await simulator.state())["lastChange"]
    result = await simulator.control("POST", "activity/steps", {"steps": 50})
    assert result["changes"] > 0
    changes = await simulator.control("GET", f"changes?after={before}")
    assert len(changes) == result["changes"]
    for change in changes:
        rec_id = change["id"]
        if change["status"] is not None and rec_id in simulator.sim.tenant.enrollments:
            assert simulator.sim.tenant.enrollments[rec_id].date_edited >= parse_datetime(
                change["dateEdited"]
            )


def test_the_same_seed_gives_the_same_tenant() -> None:
    """Generation is deterministic: same seed and sizes, same ids, statuses and stamps."""

    def build() -> list[tuple[str, int, str]]:
        clock = SimClock()
        clock.now = lambda: parse_datetime("2026-01-01T00:00:00Z")  # type: ignore[method-assign]
        tenant = generate(TenantSpec(seed=3, users=30, courses=5), clock, User("a", "A", "B"))
        return [(e.id, e.status, e.date_edited.isoformat()) for e in tenant.enrollments.values()]

    assert build() == build()
    assert len(build()) > 20


async def test_skew_moves_absorbs_clock(simulator: SimHandle) -> None:
    """A skew makes Absorb's stamps run ahead of this machine's clock."""
    await simulator.control("POST", "clock", {"skew_s": 600})
    state = await simulator.state()
    assert state["skewSeconds"] == 600


async def test_unknown_paths_are_404(simulator: SimHandle) -> None:
    """Paths Absorb does not have are 404, not some fallback."""
    token = await _login(simulator)
    assert (await _get(simulator, "/nope", token))[0] == 404
