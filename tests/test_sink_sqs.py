"""The sqs sink through the real delivery core, against moto's SQS server."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientSession, web
from structlog.testing import capture_logs

from bridge.config import SqsSinkConfig
from bridge.delivery import SinkWorker
from bridge.sinks.base import Delivery, SinkError
from bridge.sinks.sqs import SqsSink
from bridge.store import Store
from tests.conftest import free_port
from tests.engine import put_events, sample_events, settle_worker, sink_worker, statuses_by_subject
from tests.fixtures_aws import AWS_ACCESS_KEY_ID, AWS_REGION, AWS_SECRET_ACCESS_KEY
from tests.receivers import serve

FAST = (0, 0.05, 0.05)


def _sink(queue_url: str, endpoint_url: str) -> SqsSink:
    config = SqsSinkConfig.model_validate(
        {
            "name": "queue",
            "type": "sqs",
            "queue_url": queue_url,
            "endpoint_url": endpoint_url,
            "region": AWS_REGION,
            "access_key_id": AWS_ACCESS_KEY_ID,
            "secret_access_key": AWS_SECRET_ACCESS_KEY,
        }
    )
    return SqsSink(config)


async def _worker(redis: aioredis.Redis, sink: SqsSink, **options: Any) -> tuple[SinkWorker, Store]:
    options.setdefault("schedule", FAST * 4)
    return await sink_worker(redis, sink, "sqs", **options)


async def _settle(worker: SinkWorker, done: Callable[[], bool], timeout_s: float = 20) -> None:
    await settle_worker(worker, done, timeout_s)


async def _receive_all(client: Any, queue_url: str, count: int) -> list[dict[str, Any]]:
    """Receive (and delete) messages until `count` arrived, then make sure no more come."""
    messages: list[dict[str, Any]] = []
    empty = 0
    while len(messages) < count or empty < 2:
        reply = await client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        batch = reply.get("Messages", [])
        empty = 0 if batch else empty + 1
        assert empty < 50, f"only {len(messages)} of {count} messages arrived"
        messages += batch
        for message in batch:
            await client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return messages


async def _queue(client: Any, fifo: bool) -> str:
    name = f"events-{secrets.token_hex(4)}" + (".fifo" if fifo else "")
    attributes = {"FifoQueue": "true"} if fifo else {}
    reply = await client.create_queue(QueueName=name, Attributes=attributes)
    return str(reply["QueueUrl"])


def _attributes(message: dict[str, Any]) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}


async def test_standard_queue_gets_every_event_once_with_ce_attributes(
    redis: aioredis.Redis, sqs_endpoint: str, sqs_client: Any
) -> None:
    """Thirty events on a standard queue: each once, body the CloudEvent, ce- attributes set."""
    queue_url = await _queue(sqs_client, fifo=False)
    sink = _sink(queue_url, sqs_endpoint)
    worker, store = await _worker(redis, sink)
    events = sample_events(30, subjects=5)
    await put_events(store, events)
    await _settle(worker, lambda: worker.delivered == 30)
    messages = await _receive_all(sqs_client, queue_url, 30)
    by_id = {e["id"]: e for e in events}
    assert sorted(json.loads(m["Body"])["id"] for m in messages) == sorted(by_id)
    for message in messages:
        event = json.loads(message["Body"])
        assert event == by_id[event["id"]]
        assert _attributes(message) == {
            "ce-id": event["id"],
            "ce-type": "absorb.course_enrollment.status_changed",
            "ce-source": event["source"],
            "ce-subject": event["subject"],
            "ce-specversion": "1.0",
            "ce-time": event["time"],
            "ce-status": event["status"],
            "ce-previousstatus": event["previousstatus"],
            "content-type": "application/cloudevents+json",
        }
    await sink.close()


async def test_fifo_queue_groups_by_subject_dedups_by_id_and_keeps_order(
    redis: aioredis.Redis, sqs_endpoint: str, sqs_client: Any
) -> None:
    """On a FIFO queue: group id = subject, dedup id = event id, each subject's order kept."""
    queue_url = await _queue(sqs_client, fifo=True)
    sink = _sink(queue_url, sqs_endpoint)
    assert sink.config.fifo
    worker, store = await _worker(redis, sink)
    events = sample_events(40, subjects=4)
    await put_events(store, events)
    await _settle(worker, lambda: worker.delivered == 40)
    # Sent again (as after a lost reply): SQS drops it on the deduplication id.
    await sink.send(Delivery(events[0], json.dumps(events[0]), "f", "c1"))
    messages = await _receive_all(sqs_client, queue_url, 40)
    assert len(messages) == 40
    received = []
    for message in messages:
        event = json.loads(message["Body"])
        assert message["Attributes"]["MessageGroupId"] == event["subject"]
        assert message["Attributes"]["MessageDeduplicationId"] == event["id"]
        received.append(event)
    got = {s: [e["id"] for e in chain] for s, chain in statuses_by_subject(received).items()}
    want = {s: [e["id"] for e in chain] for s, chain in statuses_by_subject(events).items()}
    assert got == want
    await sink.close()


async def test_an_unreachable_endpoint_is_retried_then_dead_lettered(
    redis: aioredis.Redis,
) -> None:
    """Nothing listens: each event is tried on the schedule, then dead-lettered with the reason."""
    url = f"http://127.0.0.1:{free_port()}"
    sink = _sink(f"{url}/123456789012/events", url)
    worker, store = await _worker(redis, sink, schedule=FAST)
    await put_events(store, sample_events(2, subjects=2))
    with capture_logs() as logs:
        await _settle(worker, lambda: worker.failed == 2 * len(FAST))
    letters = await worker.queue.dead_letters()
    assert len(letters) == 2
    assert {letter.queued.attempts for letter in letters} == {len(FAST)}
    error = letters[0].queued.error or ""
    assert "connect" in error.lower()
    assert AWS_SECRET_ACCESS_KEY not in error
    retries = [e for e in logs if e["event"] == "delivery.retrying"]
    assert len(retries) == 2 * (len(FAST) - 1)
    assert all(AWS_SECRET_ACCESS_KEY not in str(e) for e in logs)
    assert worker.delivered == 0
    await sink.close()


async def test_a_missing_queue_is_a_sink_error_naming_the_fix(sqs_endpoint: str) -> None:
    """A queue that does not exist: SinkError telling to check queue_url, no library error."""
    sink = _sink(f"{sqs_endpoint}/123456789012/no-such-queue-{secrets.token_hex(3)}", sqs_endpoint)
    await sink.start()
    event = sample_events(1)[0]
    with pytest.raises(SinkError, match="queue_url") as caught:
        await sink.send(Delivery(event, json.dumps(event), "f", "c1"))
    assert caught.value.retry_after_s is None
    assert not caught.value.gone
    await sink.close()


async def test_a_redirecting_endpoint_is_never_followed(
    redis: aioredis.Redis, sqs_endpoint: str, sqs_client: Any
) -> None:
    """An endpoint answering 301, 302, 303, 307 and 308 in turn: each a failed try naming the
    Location, nothing sent there; once it forwards to SQS, every event arrives once."""
    queue_url = await _queue(sqs_client, fifo=False)
    redirects, seen = [301, 302, 303, 307, 308], []

    async def endpoint(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append(request.method)
        if redirects:
            # Followed, a 307 or 308 would re-send the message to the real queue.
            return web.Response(status=redirects.pop(0), headers={"Location": sqs_endpoint + "/"})
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with (
            ClientSession() as session,
            session.post(sqs_endpoint + "/", data=body, headers=headers) as reply,
        ):
            return web.Response(status=reply.status, body=await reply.read(),
                                headers={"Content-Type": reply.content_type})  # fmt: skip

    app = web.Application()
    app.router.add_post("/", endpoint)
    runner, url = await serve(app)
    sink = _sink(queue_url, url)
    worker, store = await _worker(redis, sink, schedule=(0,) + (0.01,) * 10)
    events = sample_events(3, subjects=1)
    await put_events(store, events)
    try:
        with capture_logs() as logs:
            await _settle(worker, lambda: worker.delivered == 3)
        retried = [e["error"] for e in logs if e["event"] == "delivery.retrying"]
        assert len(retried) == 5
        for status, error in zip((301, 302, 303, 307, 308), retried, strict=True):
            assert f"HTTP {status} redirecting to {sqs_endpoint}/" in error
        assert seen == ["POST"] * 8  # no GET of a followed 301/302/303
        messages = await _receive_all(sqs_client, queue_url, 3)
        assert sorted(json.loads(m["Body"])["id"] for m in messages) == sorted(
            e["id"] for e in events
        )
    finally:
        await sink.close()
        await runner.cleanup()
