"""Paging, filtering and sorting through the client, as Absorb does them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bridge.absorb.client import AbsorbClient
from bridge.absorb.filters import field, guid, sort
from bridge.absorb.models import Status
from bridge.absorb.paths import Op
from bridge.absorb.transport import AbsorbTransport, Credentials
from bridge.errors import AbsorbPagingError
from tests.conftest import API_KEY, FAST_RETRY, PASSWORD, USERNAME, MakeClient, SimHandle


class OffsetRecorder(AbsorbTransport):
    """A real transport that notes the `_limit`/`_offset` of every page it asks for."""

    pages: tuple[tuple[Any, Any], ...] = ()

    async def request(self, op: Op, **kwargs: Any) -> Any:
        params = kwargs.get("params") or {}
        if "_offset" in params:
            self.pages = (*self.pages, (params["_limit"], params["_offset"]))
        return await super().request(op, **kwargs)


async def _biggest_course(sim: SimHandle) -> str:
    return max(sim.sim.tenant.by_course, key=lambda c: len(sim.sim.tenant.by_course[c]))


async def test_offset_is_a_page_index_across_many_pages(start_simulator: Any) -> None:
    """Seven-record pages walk offsets 0,1,2,… and together hold every enrollment exactly once."""
    sim = await start_simulator(users=120, courses=3, enrollment_ratio=0.9)
    course = await _biggest_course(sim)
    expected = set(sim.sim.tenant.by_course[course])
    transport = OffsetRecorder(sim.url, Credentials(API_KEY, USERNAME, PASSWORD), retry=FAST_RETRY)
    async with AbsorbClient(transport, page_size=7) as client:
        ids = [e.id async for e in client.list_course_enrollments(course)]
    assert len(ids) == len(expected)
    assert set(ids) == expected
    pages = -(-len(expected) // 7)
    assert transport.pages == tuple((7, n) for n in range(pages))
    assert pages > 10


async def test_stops_at_the_last_page_without_an_extra_request(start_simulator: Any) -> None:
    """When the records fill the last page exactly, totalItems stops the walk."""
    sim = await start_simulator(users=60, courses=2, enrollment_ratio=0.5)
    course = await _biggest_course(sim)
    total = len(sim.sim.tenant.by_course[course])
    transport = OffsetRecorder(sim.url, Credentials(API_KEY, USERNAME, PASSWORD), retry=FAST_RETRY)
    async with AbsorbClient(transport, page_size=total) as client:
        ids = [e.id async for e in client.list_course_enrollments(course)]
    assert len(ids) == total
    assert transport.pages == ((total, 0),)


async def test_never_asks_past_page_index_65535(client: AbsorbClient, simulator: SimHandle) -> None:
    """The client refuses to ask for a page index Absorb would reject, naming the endpoint."""
    course = await _biggest_course(simulator)
    pages = client.pages(
        Op.LIST_COURSE_ENROLLMENTS, "enrollments", {"course_id": course}, first_page=65536
    )
    with pytest.raises(AbsorbPagingError, match=f"GET /courses/{course}/enrollments"):
        await anext(pages)


async def test_page_size_is_bounded_like_absorb(client: AbsorbClient) -> None:
    """A page size above Absorb's maximum of 1000 is refused before any request."""
    with pytest.raises(ValueError, match=r"1\.\.1000"):
        AbsorbClient(client.transport, page_size=1001)


async def test_filter_and_sort_select_what_python_would(
    start_simulator: Any, make_client: MakeClient
) -> None:
    """A built `_filter` and multi-field `_sort` give the records and order computed locally."""
    sim = await start_simulator(users=150, courses=4, enrollment_ratio=0.8)
    client = make_client(sim.url, page_size=9)
    course = await _biggest_course(sim)
    everything = [e async for e in client.list_course_enrollments(course)]
    middle = sorted(e.date_edited for e in everything if e.date_edited)[len(everything) // 2]
    wanted = (field("status").eq(Status.Complete) | field("status").eq(Status.Failed)) & field(
        "dateEdited"
    ).ge(middle)
    got = [
        e
        async for e in client.list_course_enrollments(
            course, filter=str(wanted), sort=sort("status", "-dateEdited", "id")
        )
    ]
    expected = [
        e
        for e in everything
        if e.status in (Status.Complete, Status.Failed)
        and e.date_edited
        and e.date_edited >= middle
    ]
    expected.sort(key=lambda e: e.id)
    expected.sort(key=lambda e: e.date_edited, reverse=True)  # type: ignore[arg-type,return-value]
    expected.sort(key=lambda e: e.status)  # type: ignore[arg-type,return-value]
    assert [e.id for e in got] == [e.id for e in expected]
    assert got


async def test_filter_by_guid_and_text(client: AbsorbClient, simulator: SimHandle) -> None:
    """guid'…' literals and case-insensitive text functions select the same learner."""
    course = await _biggest_course(simulator)
    one = next(iter(simulator.sim.tenant.by_course[course].values()))
    by_id = [
        e
        async for e in client.list_course_enrollments(
            course, filter=str(field("id").eq(guid(one.id)))
        )
    ]
    assert [e.id for e in by_id] == [one.id]
    name = one.user.full_name
    by_name = field("fullName").lower().eq(name.lower()) & field("fullName").startswith(
        name[:3].upper()
    )
    found = {e.id async for e in client.list_course_enrollments(course, filter=str(by_name))}
    assert one.id in found
    assert all(
        simulator.sim.tenant.enrollments[i].user.full_name.lower() == name.lower() for i in found
    )


async def test_modified_since_and_status_parameters(
    client: AbsorbClient, simulator: SimHandle
) -> None:
    """The deprecated `modifiedSince` (exclusive) and `status` parameters still filter."""
    course = await _biggest_course(simulator)
    records = list(simulator.sim.tenant.by_course[course].values())
    pivot = sorted(r.date_edited for r in records)[len(records) // 2]
    newer = {e.id async for e in client.list_course_enrollments(course, modified_since=pivot)}
    assert newer == {r.id for r in records if r.date_edited > pivot}
    done = {e.id async for e in client.list_course_enrollments(course, status=Status.Complete)}
    assert done == {r.id for r in records if r.status == Status.Complete}
    later = pivot + timedelta(days=365)
    assert [e async for e in client.list_course_enrollments(course, modified_since=later)] == []
