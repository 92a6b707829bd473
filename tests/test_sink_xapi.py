"""The xapi sink against a real LRS (Ralph), through the real delivery core where it matters."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import redis.asyncio as aioredis
import yaml
from aiohttp import web

from bridge.absorb.models import Status
from bridge.commands.check_config import check_config
from bridge.commands.test_sink import test_sink as run_test_sink
from bridge.config import XapiSinkConfig
from bridge.delivery import Circuit, SinkWorker
from bridge.routes import Route
from bridge.sinks.base import SinkError
from bridge.sinks.xapi import XapiSink
from bridge.snapshots import Kind
from bridge.store import Store
from bridge.xapi.ids import registered_id
from tests.engine import put_events
from tests.fixtures_brokers import MakePipeline
from tests.fixtures_lrs import Lrs, RalphServer, read_statements
from tests.xapi_events import SOURCE, Enrollment

ADL = "http://adlnet.gov/expapi/verbs/"


def xapi_sink(lrs: Lrs | str, **extra: Any) -> XapiSink:
    """An xapi sink for an LRS (or for a Ralph URL with the session's credentials)."""
    settings = lrs.sink_config(**extra) if isinstance(lrs, Lrs) else extra
    return XapiSink(XapiSinkConfig.model_validate(settings))


def verbs(statements: list[dict[str, Any]]) -> list[str]:
    """The short verb names of statements, sorted."""
    return sorted(s["verb"]["id"].removeprefix(ADL) for s in statements)


#: One transition each: the event an enrollment makes, and the verbs it must land as.
TRANSITIONS: list[tuple[str, Status, Status, list[str]]] = [
    ("created", Status.InProgress, Status.InProgress, ["registered"]),
    ("status_changed", Status.InProgress, Status.NotStarted, ["attempted"]),
    ("status_changed", Status.Complete, Status.InProgress, ["completed", "passed"]),
    ("status_changed", Status.Failed, Status.InProgress, ["failed"]),
    ("status_changed", Status.NotComplete, Status.InProgress, ["abandoned"]),
    ("status_changed", Status.Absent, Status.InProgress, ["abandoned"]),
    ("status_changed", Status.Declined, Status.InProgress, ["abandoned"]),
    ("status_changed", Status.NotApplicable, Status.InProgress, ["waived"]),
    ("progress_changed", Status.InProgress, Status.InProgress, ["progressed"]),
]


@pytest.mark.parametrize("batch_size", [50, 1], ids=["post-batches", "put-each"])
async def test_each_mapped_transition_lands_as_the_expected_statement(
    lrs: Lrs,
    make_pipeline: MakePipeline,
    statement_schema: jsonschema.protocols.Validator,
    batch_size: int,
) -> None:
    """Through the delivery core, every transition is in Ralph under its registration as
    the documented statements, and what Ralph returns is valid xAPI 1.0.3."""
    sink = xapi_sink(lrs, batch_size=batch_size)
    pipeline = await make_pipeline(sink)
    cases = []
    for change, status, before, expected in TRANSITIONS:
        enrollment = Enrollment()
        event = enrollment.event(change, status, before=before, progress=75.0)
        cases.append((enrollment, event, expected))
    await pipeline.put([event for _, event, _ in cases])
    try:
        await pipeline.run()
    finally:
        await sink.close()
    assert pipeline.worker.failed == 0
    for enrollment, event, expected in cases:
        stored = await read_statements(lrs, registration=enrollment.enrollment_id)
        assert verbs(stored) == expected, event["type"]
        for statement in stored:
            statement_schema.validate(statement)
            assert statement["actor"]["account"] == {"homePage": SOURCE, "name": enrollment.user_id}
            assert statement["object"]["id"] == f"{SOURCE}/xapi/course/{enrollment.course_id}"
            assert statement["context"]["platform"] == "Absorb LMS"
            assert (
                statement["context"]["extensions"]["urn:absorb-bridge:xapi:cloudevent-id"]
                == event["id"]
            )
            assert statement["timestamp"].startswith("2026-03-02T14:30:00")
    completed = await read_statements(lrs, registration=cases[2][0].enrollment_id)
    assert {s["result"]["score"]["scaled"] for s in completed} == {0.92}
    assert {s["result"]["duration"] for s in completed} == {"PT45M"}


async def test_lesson_statements_name_their_course_and_a_removal_voids_registered(
    lrs: Lrs, statement_schema: jsonschema.protocols.Validator
) -> None:
    """A lesson's statement has its course as parent; a removal lands as a voiding statement
    pointing at the enrollment's `registered` statement."""
    sink = xapi_sink(lrs)
    enrollment = Enrollment()
    lesson = enrollment.event("status_changed", Status.Failed, kind=Kind.lesson_enrollment)
    created = enrollment.event("created", Status.InProgress)
    gone = enrollment.event("removed", Status.InProgress)
    try:
        for event in (lesson, created, gone):
            await sink.send(enrollment.delivery(event))
    finally:
        await sink.close()
    stored = await read_statements(lrs, registration=enrollment.enrollment_id)
    (failed,) = [s for s in stored if s["verb"]["id"] == ADL + "failed"]
    assert failed["object"]["id"] == f"{SOURCE}/xapi/lesson/{enrollment.lesson_id}"
    (parent,) = failed["context"]["contextActivities"]["parent"]
    assert parent["id"] == f"{SOURCE}/xapi/course/{enrollment.course_id}"
    (voiding,) = await read_statements(lrs, statementId=_voiding_id(sink, enrollment, gone))
    statement_schema.validate(voiding)
    assert voiding["verb"]["id"] == ADL + "voided"
    assert voiding["object"] == {
        "objectType": "StatementRef",
        "id": str(registered_id(enrollment.enrollment_id)),
    }


async def test_an_attempts_launch_and_completion_land_under_its_course_registration(
    lrs: Lrs, statement_schema: jsonschema.protocols.Validator
) -> None:
    """An attempt started, then completed with a score, lands in Ralph as `launched`,
    `completed` and `passed` under the course enrollment's registration: valid xAPI, the
    learner as actor, the lesson as parent and the course as grouping."""
    sink = xapi_sink(lrs)
    enrollment = Enrollment()
    started = enrollment.event("created", Status.InProgress, kind=Kind.attempt)
    finished = enrollment.event("status_changed", Status.Complete, kind=Kind.attempt)
    try:
        for event in (started, finished):
            await sink.send(enrollment.delivery(event))
    finally:
        await sink.close()
    stored = await read_statements(lrs, registration=enrollment.enrollment_id)
    assert verbs(stored) == ["completed", "launched", "passed"]
    for statement in stored:
        statement_schema.validate(statement)
        assert statement["actor"]["name"] == "Test Learner"
        assert statement["actor"]["account"] == {"homePage": SOURCE, "name": enrollment.user_id}
        assert statement["object"]["id"] == f"{SOURCE}/xapi/attempt/{enrollment.attempt_id}"
        activities = statement["context"]["contextActivities"]
        assert [a["id"] for a in activities["parent"]] == [
            f"{SOURCE}/xapi/lesson/{enrollment.lesson_id}"
        ]
        assert [a["id"] for a in activities["grouping"]] == [
            f"{SOURCE}/xapi/course/{enrollment.course_id}"
        ]
    (launched,) = [s for s in stored if s["verb"]["id"] == ADL + "launched"]
    assert (
        launched["context"]["extensions"]["urn:absorb-bridge:xapi:cloudevent-id"] == started["id"]
    )


def _voiding_id(sink: XapiSink, enrollment: Enrollment, event: dict[str, Any]) -> str:
    (statement,) = sink.statements(enrollment.delivery(event))
    return str(statement["id"])


async def test_a_redelivered_event_makes_no_second_statement(lrs: Lrs) -> None:
    """The same event sent again, alone or in a batch, leaves one statement per verb."""
    enrollment = Enrollment()
    delivery = enrollment.delivery(enrollment.event("status_changed", Status.Complete))
    single, batched = xapi_sink(lrs, batch_size=1), xapi_sink(lrs, batch_size=50)
    other = Enrollment()
    neighbour = other.delivery(other.event("status_changed", Status.Failed))
    try:
        await single.send(delivery)
        await single.send(delivery)
        assert await batched.send_many([delivery, neighbour]) == [None, None]
        assert await batched.send_many([delivery]) == [None]
    finally:
        await single.close()
        await batched.close()
    stored = await read_statements(lrs, registration=enrollment.enrollment_id)
    assert verbs(stored) == ["completed", "passed"]
    assert verbs(await read_statements(lrs, registration=other.enrollment_id)) == ["failed"]


async def test_a_different_statement_under_the_same_id_is_a_named_conflict(lrs: Lrs) -> None:
    """When the LRS holds another statement under the id, the event fails for good, and
    the error names the statement and what differs; the next events still go."""
    enrollment = Enrollment()
    delivery = enrollment.delivery(enrollment.event("status_changed", Status.Failed))
    sink = xapi_sink(lrs, batch_size=50)
    (statement,) = sink.statements(delivery)
    squatter = {**statement, "verb": {"id": ADL + "experienced"}}
    async with (
        aiohttp.ClientSession(headers=lrs.headers()) as session,
        session.put(
            lrs.url + "statements", params={"statementId": statement["id"]}, json=squatter
        ) as reply,
    ):
        assert reply.status == 204
    other = Enrollment()
    fine = other.delivery(other.event("status_changed", Status.Failed))
    try:
        with pytest.raises(SinkError) as caught:
            await sink.send(delivery)
        outcomes = await sink.send_many([delivery, fine])
    finally:
        await sink.close()
    assert caught.value.permanent
    assert f"conflict: the LRS holds a different statement {statement['id']}" in str(caught.value)
    assert "verb.id: sent 'http://adlnet.gov/expapi/verbs/failed'" in str(caught.value)
    assert outcomes[1] is None
    assert outcomes[0] is not None
    assert outcomes[0].permanent
    assert verbs(await read_statements(lrs, registration=other.enrollment_id)) == ["failed"]


@pytest.fixture
async def lrs_answering_409() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An LRS stand-in that answers every PUT 409 and returns what it was given first."""
    stored: dict[str, dict[str, Any]] = {}
    puts: list[dict[str, Any]] = []

    async def put(request: web.Request) -> web.Response:
        body = await request.json()
        puts.append(body)
        stored.setdefault(request.query["statementId"], body)
        return web.Response(status=409, text="statement exists")

    async def get(request: web.Request) -> web.Response:
        found = stored.get(request.query["statementId"])
        if found is None:
            return web.Response(status=404)
        # As an LRS returns it: with what it adds, a timestamp written its own way.
        copy = {**found, "stored": "2026-03-02T15:00:00.000Z", "version": "1.0.3"}
        copy["timestamp"] = copy["timestamp"].replace("Z", "+00:00")
        return web.json_response(copy)

    app = web.Application()
    app.router.add_put("/xAPI/statements", put)
    app.router.add_get("/xAPI/statements", get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/xAPI/", puts
    finally:
        await runner.cleanup()


async def test_a_409_for_the_identical_statement_counts_as_delivered(
    lrs_answering_409: tuple[str, list[dict[str, Any]]],
) -> None:
    """An LRS that answers 409 to a statement it already holds, identical: delivered."""
    url, puts = lrs_answering_409
    enrollment = Enrollment()
    delivery = enrollment.delivery(enrollment.event("status_changed", Status.Complete))
    sink = xapi_sink(url, name="lrs", type="xapi", endpoint=url, bearer_token="t0ken-t0ken")
    try:
        await sink.send(delivery)
    finally:
        await sink.close()
    assert len(puts) == 2
    assert "already stored, identical" in sink.last_reply


async def test_the_lrs_down_loses_nothing(
    ralph_server: RalphServer, lrs: Lrs, make_pipeline: MakePipeline
) -> None:
    """Events that meet a stopped LRS are retried, and all land once it is back."""
    ralph_server.start()
    ralph_server.stop()
    private = Lrs(ralph_server.url, lrs.username, lrs.password)
    sink = xapi_sink(private, batch_size=5, timeout="2s")
    pipeline = await make_pipeline(sink, schedule=(0.0, *(0.2,) * 300))
    enrollments = [Enrollment() for _ in range(12)]
    await pipeline.put([e.event("status_changed", Status.Complete) for e in enrollments])
    try:
        for _ in range(20):
            await pipeline.worker.feed_once()
            await pipeline.worker.deliver_once()
            await asyncio.sleep(0.02)
        assert pipeline.worker.failed > 0
        assert pipeline.worker.delivered == 0
        await asyncio.to_thread(ralph_server.start)
        await pipeline.run(timeout_s=60)
    finally:
        await sink.close()
    assert pipeline.worker.delivered == len(enrollments)
    assert await pipeline.worker.queue.dead_letters() == []
    for enrollment in enrollments:
        stored = await read_statements(private, registration=enrollment.enrollment_id)
        assert verbs(stored) == ["completed", "passed"]


async def test_an_event_without_a_valid_statement_is_dead_lettered_at_once(
    lrs: Lrs, make_pipeline: MakePipeline
) -> None:
    """A record that cannot make a valid statement fails its event alone, on the first try,
    with the field named; the events around it are delivered."""
    sink = xapi_sink(lrs)
    pipeline = await make_pipeline(sink)
    good, bad = Enrollment(), Enrollment()
    # The engine takes any number as a score; a percentage it is not.
    hostile = bad.event("status_changed", Status.Failed, score=250.0)
    await pipeline.put([good.event("status_changed", Status.Failed), hostile])
    try:
        await pipeline.run()
    finally:
        await sink.close()
    (letter,) = await pipeline.worker.queue.dead_letters()
    assert letter.queued.attempts == 1
    assert "data.current.score 250.0 is not a percentage" in (letter.queued.error or "")
    assert verbs(await read_statements(lrs, registration=good.enrollment_id)) == ["failed"]


async def test_wrong_credentials_are_retried_and_never_echoed(lrs: Lrs) -> None:
    """A 401 is a retryable failure whose message and reply never hold the password."""
    enrollment = Enrollment()
    delivery = enrollment.delivery(enrollment.event("status_changed", Status.Failed))
    sink = XapiSink(
        XapiSinkConfig.model_validate({**lrs.sink_config(), "password": "SEKRIT-wrong-password-77"})
    )
    try:
        with pytest.raises(SinkError) as caught:
            await sink.send(delivery)
    finally:
        await sink.close()
    assert not caught.value.permanent
    assert "401" in str(caught.value)
    assert "SEKRIT" not in str(caught.value) + sink.last_reply


def _config_file(tmp_path: Path, sink: dict[str, Any]) -> Path:
    data = {
        "absorb": {
            "base_url": SOURCE,
            "api_key": "k",
            "username": "u",
            "password": "p",
        },
        "feeds": [{"name": "courses", "resource": "course_enrollments"}],
        "sinks": [sink],
        "routes": [{"sinks": [sink["name"]]}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_test_sink_delivers_the_sample_to_the_lrs(lrs: Lrs, tmp_path: Path) -> None:
    """`absorb-bridge test-sink` sends the sample completion to the LRS and says it landed."""
    path = _config_file(tmp_path, lrs.sink_config())
    out = io.StringIO()
    with redirect_stdout(out):
        assert run_test_sink(str(path), "lrs") == 0
    assert "test-sink lrs: delivered in" in out.getvalue()
    assert lrs.password not in out.getvalue()


def test_check_config_shows_the_sink_with_credentials_masked(lrs: Lrs, tmp_path: Path) -> None:
    """check-config prints the xapi keys with their defaults and never the credentials."""
    sink = {**lrs.sink_config(), "endpoint": "https://lrs.example/xAPI"}
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(_config_file(tmp_path, sink)), {}, out, err) == 0
    shown = yaml.safe_load(out.getvalue())["sinks"][0]
    assert shown["password"] == "***"
    assert shown["endpoint"] == "https://lrs.example/xAPI/"
    assert shown["x_experience_api_version"] == "1.0.3"
    assert lrs.password not in out.getvalue() + err.getvalue()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: s.pop("password"), "sinks[0].password: required: HTTP Basic needs both"),
        (lambda s: s.update(bearer_token="tok"), "sinks[0].bearer_token: give username/password"),
        (lambda s: [s.pop("username"), s.pop("password")], "sinks[0].username: required"),
        (lambda s: s.update(endpoint="ftp://lrs"), "sinks[0].endpoint: must be a URL"),
        (lambda s: s.update(batch_size=0), "sinks[0].batch_size"),
        (lambda s: s.update(x_experience_api_version="2.0"), "sinks[0].x_experience_api_version"),
        (lambda s: s.update(actor="email"), "sinks[0].actor"),
    ],
)
def test_bad_xapi_settings_are_named_by_path(
    lrs: Lrs, tmp_path: Path, change: Callable[[dict[str, Any]], Any], problem: str
) -> None:
    """Each wrong xapi key is a check-config problem at its path, secrets unprinted."""
    sink = lrs.sink_config()
    change(sink)
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(_config_file(tmp_path, sink)), {}, out, err) == 1
    assert problem in err.getvalue()
    assert lrs.password not in err.getvalue()
    assert json.dumps(sink)  # the settings stayed plain data


async def test_events_that_cannot_be_statements_do_not_open_the_circuit(
    lrs: Lrs, redis: aioredis.Redis
) -> None:
    """Permanent failures are the events' fault, not the LRS's: with a circuit that opens
    after two failures, three unmappable events leave it closed and the next one lands."""
    sink = xapi_sink(lrs, batch_size=1)
    store = Store(redis, f"xapi-{secrets.token_hex(4)}")
    worker = SinkWorker(
        redis, store.prefix, sink, [Route(sinks=(sink.name,))], consumer="test",
        schedule=(0.0, 0.05), circuit=Circuit(threshold=2),
    )  # fmt: skip
    await worker.setup()
    bad = [Enrollment() for _ in range(3)]
    good = Enrollment()
    await put_events(
        store,
        [e.event("status_changed", Status.Failed, score=-5.0) for e in bad]
        + [good.event("status_changed", Status.Failed)],
    )
    try:
        for _ in range(50):
            await worker.feed_once()
            await worker.deliver_once()
            if worker.delivered + worker.failed >= 4:
                break
            await asyncio.sleep(0.01)
    finally:
        await sink.close()
    assert not worker.circuit.is_open
    assert worker.failed == 3
    assert len(await worker.queue.dead_letters()) == 3
    assert verbs(await read_statements(lrs, registration=good.enrollment_id)) == ["failed"]


async def test_an_lrs_asking_to_wait_is_honoured() -> None:
    """A 503 with Retry-After is a retryable failure carrying the wait, alone or batched."""

    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=503, headers={"Retry-After": "7"}, text="busy")

    app = web.Application()
    app.router.add_route("*", "/xAPI/statements", busy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    endpoint = f"http://127.0.0.1:{port}/xAPI/"
    sink = xapi_sink(endpoint, name="lrs", type="xapi", endpoint=endpoint, bearer_token="t0ken")
    enrollment = Enrollment()
    delivery = enrollment.delivery(enrollment.event("status_changed", Status.Failed))
    try:
        with pytest.raises(SinkError) as single:
            await sink.send(delivery)
        other = Enrollment()
        outcomes = await sink.send_many(
            [delivery, other.delivery(other.event("status_changed", Status.Failed))]
        )
    finally:
        await sink.close()
        await runner.cleanup()
    assert single.value.retry_after_s == 7
    assert not single.value.permanent
    assert "HTTP 503: busy" in str(single.value)
    assert [o.retry_after_s if o else None for o in outcomes] == [7, 7]
