"""The events catalogue and its JSON Schemas: current with the code, strict enough to
catch a wrong event, and met by the events the bridge really emits."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis.asyncio as aioredis

from bridge import event_schemas, samples
from bridge.feeds import FeedSpec
from bridge.snapshots import Kind
from tests.conftest import MakeClient, StartSimulator
from tests.engine import make_engine

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _validator(event_type: str) -> jsonschema.Draft202012Validator:
    schema = event_schemas.event_schema(event_type)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _problems(event: dict[str, Any]) -> list[str]:
    return [e.message for e in _validator(event["type"]).iter_errors(event)]


def test_the_catalogue_and_schemas_in_docs_are_current(tmp_path: Path) -> None:
    """docs/events.md and docs/schemas/ are what `python -m bridge.event_schemas docs` writes."""
    event_schemas.write_docs(tmp_path)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    # docs/ also holds the console's screenshots; the catalogue is events.md and schemas/.
    catalogue = [DOCS / "events.md", *(DOCS / "schemas").rglob("*")]
    shipped = sorted(p.relative_to(DOCS) for p in catalogue if p.is_file())
    assert written == shipped
    for path in written:
        assert (tmp_path / path).read_text() == (DOCS / path).read_text(), path


def test_there_is_an_example_and_a_schema_for_every_type() -> None:
    """20 types (5 resources x 4 changes); each example meets its own schema only."""
    examples = samples.examples()
    assert sorted(examples) == sorted(event_schemas.event_types())
    assert len(examples) == 20
    for event_type, event in examples.items():
        assert _problems(event) == [], event_type
        other = next(t for t in examples if t != event_type)
        assert list(_validator(other).iter_errors(event)), (event_type, other)


def _broken() -> Iterator[tuple[str, dict[str, Any]]]:
    base = samples.examples()
    changed = copy.deepcopy(base["absorb.course_enrollment.status_changed"])
    del changed["data"]["changed"]
    yield "no data.changed", changed
    created = copy.deepcopy(base["absorb.course_enrollment.created"])
    created["previousstatus"] = "InProgress"
    yield "created with a previous status", created
    removed = copy.deepcopy(base["absorb.lesson_enrollment.removed"])
    removed["data"]["current"] = {"id": "x"}
    yield "removed with a current record", removed
    bad_id = copy.deepcopy(base["absorb.attempt.status_changed"])
    bad_id["id"] = "not-an-id"
    yield "an id that is not 32 hex digits", bad_id
    wrong = copy.deepcopy(base["absorb.course_enrollment.status_changed"])
    wrong["data"]["current"]["progress"] = "half"
    yield "progress as text", wrong
    late = copy.deepcopy(base["absorb.course_enrollment.status_changed"])
    late["time"] = "yesterday"
    yield "a time that is not RFC 3339", late


@pytest.mark.parametrize(("what", "event"), list(_broken()), ids=[w for w, _ in _broken()])
def test_the_schemas_refuse_a_wrong_event(what: str, event: dict[str, Any]) -> None:
    """Each schema catches a missing part, a part that must not be there, a wrong type."""
    assert _problems(event), what


def test_previous_fields_mirror_the_snapshot() -> None:
    """`data.previous` of real events has exactly the fields the schema's model names."""
    event = samples.examples()["absorb.course_enrollment.status_changed"]
    assert set(event["data"]["previous"]) == set(event_schemas.PreviousFields.model_fields)


async def test_events_the_bridge_emits_meet_their_schemas(
    start_simulator: StartSimulator, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """Sweeps of the simulator with drill-downs, progress events, live activity and a
    reconciliation emit created, status_changed, progress_changed and removed events of
    course, lesson, chapter enrollments and attempts: every one meets its type's schema."""
    sim = await start_simulator(users=30, courses=2, seed=11)
    engine = make_engine(sim, make_client(sim.url), redis)
    feed = FeedSpec(
        name="all",
        resource="course_enrollments",
        emit_on_first_sync=True,
        progress_events=True,
        details=frozenset({"lessons", "chapters", "attempts"}),
        lookback_s=5,
    )
    scope = engine.scope(feed)
    await engine.sweep(scope)
    for _ in range(3):
        await sim.control("POST", "activity/steps", {"steps": 60})
        await engine.sweep(scope)
    course_records = [
        r for r in sim.sim.tenant.enrollments.values() if r.course.id == scope.course_id
    ]
    await sim.control("DELETE", f"records/{course_records[0].id}")
    await sim.control("PATCH", f"records/{course_records[1].id}", {"set": {"progress": 37.5}})
    await engine.sweep(scope, full=True)
    events = await engine.new_events()
    problems = {e["id"]: _problems(e) for e in events}
    assert {k: v for k, v in problems.items() if v} == {}
    seen = {e["type"] for e in events}
    for kind in (Kind.course_enrollment, Kind.lesson_enrollment, Kind.chapter_enrollment):
        assert f"absorb.{kind.name}.created" in seen
    assert "absorb.attempt.created" in seen or "absorb.attempt.status_changed" in seen
    assert any(t.endswith(".status_changed") for t in seen)
    assert any(t.endswith(".progress_changed") for t in seen)
    assert "absorb.course_enrollment.removed" in seen
