"""The nats sink through the real delivery core, against a real nats-server with JetStream."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from structlog.testing import capture_logs

from bridge.config import NatsSinkConfig
from bridge.sinks.base import Delivery, SinkError
from bridge.sinks.nats import NatsSink, covers, stream_subjects, valid_subject
from tests.conftest import free_port
from tests.engine import sample_events, statuses_by_subject
from tests.fixtures_brokers import MakePipeline, NatsServer

TOKEN = "s3cret-nats-t0ken"


def _sink(
    url: str, *, stream: str | None, prefix: str, token: str | None = None, **options: Any
) -> NatsSink:
    config = NatsSinkConfig.model_validate(
        {
            "name": "bus",
            "type": "nats",
            "servers": [url],
            "subject": f"{prefix}.{{resource}}.{{status}}",
            "stream": stream,
            "token": token,
        }
    )
    return NatsSink(config, **options)


def _names() -> tuple[str, str]:
    """A stream name and subject prefix no other test uses."""
    tag = secrets.token_hex(4)
    return f"ABSORB_{tag}", f"t{tag}.absorb"


@pytest.fixture
async def sinks() -> AsyncIterator[list[NatsSink]]:
    """Sinks a test made; closed when it ends."""
    made: list[NatsSink] = []
    yield made
    for sink in made:
        await sink.close()


async def _client(url: str) -> Client:
    return await nats.connect(url, max_reconnect_attempts=1)


async def _read(js: JetStreamContext, stream: str, subjects: str) -> list[Msg]:
    """Everything in the stream, in stream order, through an ephemeral pull consumer."""
    info = await js.stream_info(stream)
    count = info.state.messages
    if not count:
        return []
    sub = await js.pull_subscribe(subjects, stream=stream)
    messages: list[Msg] = []
    while len(messages) < count:
        messages += await sub.fetch(count - len(messages), timeout=5)
    await sub.unsubscribe()
    return messages


def _check_arrived(messages: list[Msg], events: list[dict[str, Any]], prefix: str) -> None:
    """Each event exactly once, with its subject, headers and body, in order per enrollment."""
    received = [json.loads(m.data) for m in messages]
    assert sorted(e["id"] for e in received) == sorted(e["id"] for e in events)
    by_id = {e["id"]: e for e in events}
    for m, event in zip(messages, received, strict=True):
        assert event == by_id[event["id"]]
        assert m.subject == f"{prefix}.course_enrollment.{event['status']}"
        assert m.headers is not None
        assert m.headers["Nats-Msg-Id"] == event["id"]
        assert m.headers["Content-Type"] == "application/cloudevents+json"
        for attribute in ("id", "type", "source", "subject", "time"):
            assert m.headers[f"ce-{attribute}"] == event[attribute]
    got = {s: [e["id"] for e in es] for s, es in statuses_by_subject(received).items()}
    assert got == {s: [e["id"] for e in es] for s, es in statuses_by_subject(events).items()}


async def test_every_event_arrives_once_in_order(
    nats_url: str, make_pipeline: MakePipeline, sinks: list[NatsSink]
) -> None:
    """Every event lands once in the stream the sink created, on its templated subject."""
    stream, prefix = _names()
    sink = _sink(nats_url, stream=stream, prefix=prefix)
    sinks.append(sink)
    await sink.start()
    pipeline = await make_pipeline(sink)
    events = sample_events(40, subjects=6)
    await pipeline.put(events)

    await pipeline.run()

    assert pipeline.worker.delivered == len(events)
    nc = await _client(nats_url)
    try:
        js = nc.jetstream()
        assert (await js.stream_info(stream)).config.subjects == [f"{prefix}.*.*"]
        _check_arrived(await _read(js, stream, f"{prefix}.>"), events, prefix)
        await js.delete_stream(stream)
    finally:
        await nc.close()


async def test_the_same_event_twice_is_stored_once(nats_url: str, sinks: list[NatsSink]) -> None:
    """A re-sent event (a replay after a crash) is dropped by JetStream's de-duplication."""
    stream, prefix = _names()
    sink = _sink(nats_url, stream=stream, prefix=prefix)
    sinks.append(sink)
    first, second = sample_events(2)
    deliveries = [Delivery(e, json.dumps(e), "f", "c1") for e in (first, first, second, first)]

    for delivery in deliveries:
        await sink.send(delivery)

    nc = await _client(nats_url)
    try:
        js = nc.jetstream()
        messages = await _read(js, stream, f"{prefix}.>")
        assert [m.headers["Nats-Msg-Id"] for m in messages if m.headers] == [
            first["id"],
            second["id"],
        ]
        await js.delete_stream(stream)
    finally:
        await nc.close()


async def test_without_a_stream_setting_an_existing_stream_must_cover_the_subject(
    nats_url: str, sinks: list[NatsSink]
) -> None:
    """With no `stream` configured, sends fail clearly until the operator's stream exists."""
    stream, prefix = _names()
    sink = _sink(nats_url, stream=None, prefix=prefix)
    sinks.append(sink)
    event = sample_events(1)[0]
    delivery = Delivery(event, json.dumps(event), "f", "c1")

    with pytest.raises(SinkError, match="no JetStream stream takes subject") as caught:
        await sink.send(delivery)
    assert f"{prefix}.*.*" in str(caught.value)

    nc = await _client(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{prefix}.>"])
        await sink.send(delivery)
        assert (await js.stream_info(stream)).state.messages == 1
        await js.delete_stream(stream)
    finally:
        await nc.close()


async def test_a_stream_that_cannot_be_created_fails_start_with_the_reason(
    nats_url: str, sinks: list[NatsSink]
) -> None:
    """When another stream already holds the subjects, start says so instead of half-starting."""
    stream, prefix = _names()
    nc = await _client(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=f"{stream}_OTHER", subjects=[f"{prefix}.>"])
        sink = _sink(nats_url, stream=stream, prefix=prefix)
        sinks.append(sink)

        with pytest.raises(SinkError, match=f"cannot create JetStream stream '{stream}'") as caught:
            await sink.start()
        assert "overlap" in str(caught.value)
        await js.delete_stream(f"{stream}_OTHER")
    finally:
        await nc.close()


async def test_an_existing_stream_not_covering_the_subjects_is_reported(
    nats_url: str, sinks: list[NatsSink]
) -> None:
    """A configured stream that exists with other subjects is left alone and warned about."""
    stream, prefix = _names()
    nc = await _client(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{prefix}.elsewhere.>"])
        sink = _sink(nats_url, stream=stream, prefix=prefix)
        sinks.append(sink)
        with capture_logs() as logs:
            await sink.start()
        event = sample_events(1)[0]

        with pytest.raises(SinkError, match="no JetStream stream takes subject"):
            await sink.send(Delivery(event, json.dumps(event), "f", "c1"))
        [warning] = [e for e in logs if e["event"] == "nats.stream_does_not_cover_subjects"]
        assert warning["subjects"] == f"{prefix}.*.*"
        assert (await js.stream_info(stream)).config.subjects == [f"{prefix}.elsewhere.>"]
        await js.delete_stream(stream)
    finally:
        await nc.close()


async def test_an_outage_is_retried_until_the_server_is_back(
    nats_server: NatsServer, make_pipeline: MakePipeline, sinks: list[NatsSink]
) -> None:
    """While the server is down deliveries fail and wait; once it is back all arrive in order."""
    stream, prefix = _names()
    sink = _sink(nats_server.url, stream=stream, prefix=prefix)
    sinks.append(sink)
    await sink.start()
    pipeline = await make_pipeline(sink, schedule=(0, *(0.1,) * 100))
    events = sample_events(24, subjects=4)
    await pipeline.put(events[:4])
    await pipeline.run()

    nats_server.stop()
    await pipeline.put(events[4:])
    await pipeline.run(until=lambda: pipeline.worker.failed >= 8)
    assert pipeline.worker.delivered == 4
    nats_server.start()
    await pipeline.run()

    assert pipeline.worker.delivered == len(events)
    assert await pipeline.worker.queue.dead_letters() == []
    nc = await _client(nats_server.url)
    try:
        _check_arrived(await _read(nc.jetstream(), stream, f"{prefix}.>"), events, prefix)
    finally:
        await nc.close()


async def test_exhausting_the_schedule_dead_letters(
    nats_server: NatsServer, make_pipeline: MakePipeline, sinks: list[NatsSink]
) -> None:
    """Events that fail through the whole schedule are dead-lettered, and replay delivers them."""
    stream, prefix = _names()
    sink = _sink(nats_server.url, stream=stream, prefix=prefix)
    sinks.append(sink)
    await sink.start()
    pipeline = await make_pipeline(sink, schedule=(0, 0.05, 0.05))
    events = sample_events(6, subjects=3)
    await pipeline.put(events)

    nats_server.stop()
    await pipeline.run()

    letters = await pipeline.worker.queue.dead_letters()
    assert sorted(json.loads(d.queued.event)["id"] for d in letters) == sorted(
        e["id"] for e in events
    )
    assert all(d.queued.attempts == 3 for d in letters)
    assert all("not connected" in (d.queued.error or "") for d in letters)

    nats_server.start()
    # The client reconnects on its own schedule (every 2 s): give the replay time for it.
    pipeline.worker.schedule = (0, *(0.1,) * 100)
    await pipeline.worker.queue.replay(letters, now_ms=0)
    await pipeline.run()
    nc = await _client(nats_server.url)
    try:
        _check_arrived(await _read(nc.jetstream(), stream, f"{prefix}.>"), events, prefix)
    finally:
        await nc.close()


async def test_an_unreachable_server_fails_start_with_a_clear_error() -> None:
    """Starting against a port nobody listens on raises SinkError naming the server."""
    port = free_port()
    sink = _sink(f"nats://127.0.0.1:{port}", stream=None, prefix="x", connect_timeout_s=0.5)

    with pytest.raises(SinkError, match=f"cannot connect to nats://127.0.0.1:{port}"):
        await sink.start()
    await sink.close()


async def test_a_token_authenticates_and_never_appears_in_errors_or_logs(
    tmp_path: Path, sinks: list[NatsSink]
) -> None:
    """The token gets the sink in; a wrong one fails start clearly, with no token shown."""
    server = NatsServer(tmp_path, "--auth", TOKEN)
    server.start()
    try:
        stream, prefix = _names()
        good = _sink(server.url, stream=stream, prefix=prefix, token=TOKEN)
        wrong = _sink(
            server.url, stream=None, prefix=prefix, token="wrong-" + TOKEN, connect_timeout_s=1
        )
        sinks += [good, wrong]
        event = sample_events(1)[0]
        await good.send(Delivery(event, json.dumps(event), "f", "c1"))

        with capture_logs() as logs, pytest.raises(SinkError) as caught:
            await wrong.start()
    finally:
        server.stop()

    assert "uthorization" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert logs
    assert not [e for e in logs if TOKEN in repr(e)]


def test_the_stream_covers_every_subject_the_template_gives() -> None:
    """The stream filter made from a template covers its subjects; `{type}` needs `>`."""
    assert stream_subjects("absorb.{resource}.{change}") == "absorb.*.*"
    assert stream_subjects("lms.{feed}.x{status}.done") == "lms.*.*.done"
    assert stream_subjects("events.{type}.{status}") == "events.>"
    assert stream_subjects("fixed.subject") == "fixed.subject"
    assert covers("absorb.>", "absorb.*.*")
    assert covers("absorb.*.*", "absorb.*.*")
    assert not covers("absorb.*", "absorb.*.*")
    assert not covers("absorb.course_enrollment.*", "absorb.*.*")
    assert not covers("absorb.*.*", "absorb.>")
    assert valid_subject("absorb.course_enrollment.Complete")
    assert not valid_subject("absorb..Complete")
    assert not valid_subject("absorb.a b.c")
