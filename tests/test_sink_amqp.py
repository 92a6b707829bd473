"""The amqp sink through the real delivery core, against a real RabbitMQ node."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from structlog.testing import capture_logs

from bridge.config import AmqpSinkConfig
from bridge.sinks.amqp import AmqpSink
from bridge.sinks.base import Delivery, SinkError
from tests.conftest import free_port
from tests.engine import sample_events, statuses_by_subject
from tests.fixtures_brokers import MakePipeline, RabbitServer

PASSWORD = "S3cret-amqp-Pa55"


def _sink(url: str, *, exchange: str = "", routing_key: str, **options: Any) -> AmqpSink:
    config = AmqpSinkConfig.model_validate(
        {
            "name": "rabbit",
            "type": "amqp",
            "url": url,
            "exchange": exchange,
            "routing_key": routing_key,
        }
    )
    return AmqpSink(config, **options)


@pytest.fixture
async def sinks() -> AsyncIterator[list[AmqpSink]]:
    """Sinks a test made; closed when it ends."""
    made: list[AmqpSink] = []
    yield made
    for sink in made:
        await sink.close()


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[AbstractChannel]:
    """A channel of the test's own, to declare, bind and consume."""
    connection = await aio_pika.connect(amqp_url)
    yield await connection.channel()
    await connection.close()


async def _queue(channel: AbstractChannel) -> AbstractQueue:
    return await channel.declare_queue(f"absorb-test-{secrets.token_hex(4)}", auto_delete=True)


async def _drain(queue: AbstractQueue, count: int) -> list[AbstractIncomingMessage]:
    """`count` messages from the queue, in queue order, then check nothing more is there."""
    messages: list[AbstractIncomingMessage] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(messages) < count and loop.time() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.02)
        else:
            messages.append(message)
    assert await queue.get(no_ack=True, fail=False) is None
    return messages


def _check_arrived(
    messages: list[AbstractIncomingMessage], events: list[dict[str, Any]], prefix: str
) -> None:
    """Each event exactly once, with its routing key, properties and body, in order per subject."""
    received = [json.loads(m.body) for m in messages]
    assert sorted(e["id"] for e in received) == sorted(e["id"] for e in events)
    by_id = {e["id"]: e for e in events}
    for m, event in zip(messages, received, strict=True):
        assert event == by_id[event["id"]]
        assert m.routing_key == f"{prefix}.course_enrollment.{event['status']}"
        assert m.message_id == event["id"]
        assert m.type == event["type"]
        assert m.content_type == "application/cloudevents+json"
        assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert m.timestamp is not None
        assert m.headers == {
            "cloudEvents:id": event["id"],
            "cloudEvents:type": event["type"],
            "cloudEvents:subject": event["subject"],
        }
    got = {s: [e["id"] for e in es] for s, es in statuses_by_subject(received).items()}
    assert got == {s: [e["id"] for e in es] for s, es in statuses_by_subject(events).items()}


def _names() -> tuple[str, str]:
    """An exchange name and routing-key prefix no other test uses."""
    tag = secrets.token_hex(4)
    return f"absorb-test-{tag}", f"t{tag}.absorb"


async def test_every_event_arrives_once_in_order(
    amqp_url: str, channel: AbstractChannel, make_pipeline: MakePipeline, sinks: list[AmqpSink]
) -> None:
    """Every event reaches the bound queue once, with its templated key and CloudEvent props."""
    exchange, prefix = _names()
    topic = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, auto_delete=True)
    queue = await _queue(channel)
    await queue.bind(topic, f"{prefix}.#")
    sink = _sink(amqp_url, exchange=exchange, routing_key=f"{prefix}.{{resource}}.{{status}}")
    sinks.append(sink)
    await sink.start()
    pipeline = await make_pipeline(sink)
    events = sample_events(40, subjects=6)
    await pipeline.put(events)

    await pipeline.run()

    assert pipeline.worker.delivered == len(events)
    _check_arrived(await _drain(queue, len(events)), events, prefix)


async def test_the_default_exchange_routes_to_the_queue_named_by_the_key(
    amqp_url: str, channel: AbstractChannel, sinks: list[AmqpSink]
) -> None:
    """With no exchange configured, the routing key names the queue the event goes to."""
    queue = await _queue(channel)
    sink = _sink(amqp_url, routing_key=queue.name)
    sinks.append(sink)
    event = sample_events(1)[0]

    await sink.send(Delivery(event, json.dumps(event), "f", "c1"))

    [message] = await _drain(queue, 1)
    assert json.loads(message.body) == event
    assert message.message_id == event["id"]


async def test_a_missing_exchange_or_binding_is_retried_until_it_routes(
    amqp_url: str, channel: AbstractChannel, make_pipeline: MakePipeline, sinks: list[AmqpSink]
) -> None:
    """Sends to a missing exchange, then to one nothing is bound to, fail; once bound all arrive."""
    exchange, prefix = _names()
    sink = _sink(amqp_url, exchange=exchange, routing_key=f"{prefix}.{{resource}}.{{status}}")
    sinks.append(sink)
    pipeline = await make_pipeline(sink, schedule=(0, *(0.05,) * 200))
    events = sample_events(20, subjects=4)
    await pipeline.put(events)

    with capture_logs() as logs:
        await pipeline.run(until=lambda: pipeline.worker.failed >= 5)
        topic = await channel.declare_exchange(
            exchange, aio_pika.ExchangeType.TOPIC, auto_delete=True
        )
        failed = pipeline.worker.failed
        await pipeline.run(until=lambda: pipeline.worker.failed >= failed + 5)
        queue = await _queue(channel)
        await queue.bind(topic, f"{prefix}.#")
        await pipeline.run()

    errors = [e["error"] for e in logs if e["event"] == "delivery.retrying"]
    assert any(f"exchange '{exchange}' does not exist" in e for e in errors)
    assert any("no queue takes messages" in e for e in errors)
    assert pipeline.worker.delivered == len(events)
    assert await pipeline.worker.queue.dead_letters() == []
    _check_arrived(await _drain(queue, len(events)), events, prefix)


async def test_a_broker_restart_is_retried_until_it_is_back(
    rabbit_server: RabbitServer, make_pipeline: MakePipeline, sinks: list[AmqpSink]
) -> None:
    """While the broker is down deliveries fail and wait; once it is back all arrive in order."""
    connection = await aio_pika.connect(rabbit_server.url)
    queue_name = f"absorb-test-{secrets.token_hex(4)}"
    await (await connection.channel()).declare_queue(queue_name, durable=True)
    await connection.close()
    sink = _sink(rabbit_server.url, routing_key=queue_name)
    sinks.append(sink)
    await sink.start()
    pipeline = await make_pipeline(sink, schedule=(0, *(0.2,) * 150))
    events = sample_events(24, subjects=4)
    await pipeline.put(events[:4])
    await pipeline.run()

    await asyncio.to_thread(rabbit_server.stop)
    await pipeline.put(events[4:])
    await pipeline.run(until=lambda: pipeline.worker.failed >= 8)
    assert pipeline.worker.delivered == 4
    await asyncio.to_thread(rabbit_server.start)
    await pipeline.run(timeout_s=30)

    assert pipeline.worker.delivered == len(events)
    assert await pipeline.worker.queue.dead_letters() == []
    connection = await aio_pika.connect(rabbit_server.url)
    try:
        queue = await (await connection.channel()).get_queue(queue_name)
        received = [json.loads(m.body) for m in await _drain(queue, len(events))]
    finally:
        await connection.close()
    assert sorted(e["id"] for e in received) == sorted(e["id"] for e in events)
    got = {s: [e["id"] for e in es] for s, es in statuses_by_subject(received).items()}
    assert got == {s: [e["id"] for e in es] for s, es in statuses_by_subject(events).items()}


async def test_exhausting_the_schedule_dead_letters(
    amqp_url: str, channel: AbstractChannel, make_pipeline: MakePipeline, sinks: list[AmqpSink]
) -> None:
    """Unroutable events are tried through the schedule, then dead-lettered with the reason."""
    exchange, prefix = _names()
    await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, auto_delete=True)
    sink = _sink(amqp_url, exchange=exchange, routing_key=f"{prefix}.{{resource}}.{{status}}")
    sinks.append(sink)
    pipeline = await make_pipeline(sink, schedule=(0, 0.05, 0.05))
    events = sample_events(6, subjects=3)
    await pipeline.put(events)

    await pipeline.run()

    letters = await pipeline.worker.queue.dead_letters()
    assert sorted(json.loads(d.queued.event)["id"] for d in letters) == sorted(
        e["id"] for e in events
    )
    assert all(d.queued.attempts == 3 for d in letters)
    assert all("no queue takes messages" in (d.queued.error or "") for d in letters)
    assert pipeline.worker.delivered == 0


async def test_the_password_never_appears_in_errors_or_logs(
    amqp_url: str,
    make_pipeline: MakePipeline,
    sinks: list[AmqpSink],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Refused logins and unreachable brokers fail with the URL's password masked everywhere."""
    host = urlsplit(amqp_url).hostname
    wrong_password = amqp_url.replace(f"{urlsplit(amqp_url).password}@", f"{PASSWORD}@", 1)
    nobody = f"amqp://guest:{PASSWORD}@{host}:{free_port()}/"
    messages: list[str] = []
    with capture_logs() as logs:
        for url in (wrong_password, nobody):
            sink = _sink(url, routing_key="absorb.{resource}", connect_timeout_s=5)
            sinks.append(sink)
            with pytest.raises(SinkError) as caught:
                await sink.start()
            messages.append(str(caught.value))
            pipeline = await make_pipeline(sink, schedule=(0, 0.05))
            await pipeline.put(sample_events(2))
            await pipeline.run()
            letters = await pipeline.worker.queue.dead_letters()
            assert len(letters) == 2
            messages += [d.queued.error or "" for d in letters]

    assert "ACCESS_REFUSED" in messages[0]
    assert all("amqp://guest:***@" in m for m in messages)
    assert logs
    assert not [m for m in messages if PASSWORD in m]
    assert not [e for e in logs if PASSWORD in repr(e)]
    assert PASSWORD not in caplog.text  # aio-pika's and aiormq's own logging
