"""The redis_stream sink through the real delivery core, against real Redis servers."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.config import RedisStreamSinkConfig
from bridge.delivery import Queued, SinkWorker
from bridge.sinks.redis_stream import RedisStreamSink, _pipeline, stream_fields, xadd_command
from bridge.store import Store
from tests.conftest import free_port
from tests.engine import put_events, sample_events, settle_worker, sink_worker, statuses_by_subject

FAST = (0,) + (0.05,) * 400


def _sink(stream: str, default_url: str, **extra: Any) -> RedisStreamSink:
    config = RedisStreamSinkConfig.model_validate(
        {"name": "stream", "type": "redis_stream", "stream": stream, **extra}
    )
    return RedisStreamSink(config, default_url)


async def _worker(redis: aioredis.Redis, sink: RedisStreamSink) -> tuple[SinkWorker, Store]:
    return await sink_worker(redis, sink, "stream", schedule=FAST)


async def _settle(worker: SinkWorker, done: Callable[[], bool], timeout_s: float = 20) -> None:
    await settle_worker(worker, done, timeout_s)


async def _entries(redis: aioredis.Redis, stream: str) -> list[dict[str, str]]:
    reply: Any = await redis.xrange(stream)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in reply]


async def test_every_event_is_one_entry_with_ce_fields_in_order(
    redis: aioredis.Redis, redis_url: str
) -> None:
    """Thirty events: one entry each, binary-mode ce_ fields, data as JSON, order per subject."""
    stream = f"events-{secrets.token_hex(3)}"
    sink = _sink(stream, redis_url)  # no url: the bridge's own Redis
    worker, store = await _worker(redis, sink)
    events = sample_events(30, subjects=5)
    events[0].pop("previousstatus")  # as on a `created` event
    await put_events(store, events)
    await _settle(worker, lambda: worker.delivered == 30)
    entries = await _entries(redis, stream)
    assert sorted(e["ce_id"] for e in entries) == sorted(e["id"] for e in events)
    by_id = {e["id"]: e for e in events}
    for entry in entries:
        event = by_id[entry["ce_id"]]
        expected = {
            "ce_specversion": "1.0",
            "ce_id": event["id"],
            "ce_source": event["source"],
            "ce_type": event["type"],
            "ce_subject": event["subject"],
            "ce_time": event["time"],
            "ce_status": event["status"],
            "content-type": "application/json",
        }
        if "previousstatus" in event:
            expected["ce_previousstatus"] = event["previousstatus"]
        assert {k: v for k, v in entry.items() if k != "data"} == expected
        assert json.loads(entry["data"]) == event["data"]
    received = [by_id[e["ce_id"]] for e in entries]
    got = {s: [e["id"] for e in chain] for s, chain in statuses_by_subject(received).items()}
    want = {s: [e["id"] for e in chain] for s, chain in statuses_by_subject(events).items()}
    assert got == want
    await sink.close()


async def test_maxlen_trims_the_stream_approximately(redis: aioredis.Redis, redis_url: str) -> None:
    """With maxlen 10, three hundred events leave about ten entries (whole nodes are trimmed)."""
    stream = f"events-{secrets.token_hex(3)}"
    sink = _sink(stream, redis_url, maxlen=10)
    worker, store = await _worker(redis, sink)
    events = sample_events(300, subjects=30)
    await put_events(store, events)
    await _settle(worker, lambda: worker.delivered == 300)
    length = await redis.xlen(stream)
    # MAXLEN ~ drops only whole macro nodes (stream-node-max-entries, 100 by default).
    assert 10 <= length <= 10 + 100
    newest = await _entries(redis, stream)
    assert newest[-1]["ce_id"] in {e["id"] for e in events[-30:]}
    await sink.close()


async def test_a_redis_that_refuses_then_comes_back_gets_everything(
    redis: aioredis.Redis, redis_url: str
) -> None:
    """The sink's Redis is down: events are retried, and delivered in order once it is up."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; the test command installs it")
    port = free_port()
    stream = "absorb-events"
    url = f"redis://:hunter2-secret@127.0.0.1:{port}/0"
    sink = _sink(stream, redis_url, url=url)
    worker, store = await _worker(redis, sink)
    events = sample_events(12, subjects=3)
    await put_events(store, events)
    await _settle(worker, lambda: worker.failed >= 6)
    counts = await worker.queue.counts()
    assert counts["retrying"] == 3  # the first event of each subject; the rest wait behind
    assert counts["dead_lettered"] == 0
    error = await _first_error(redis, worker)
    assert "127.0.0.1" in error
    assert "hunter2-secret" not in error
    with tempfile.TemporaryDirectory() as workdir:
        server = await asyncio.create_subprocess_exec(
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir,
            "--requirepass", "hunter2-secret", stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await _settle(worker, lambda: worker.delivered == 12)
            other = aioredis.Redis.from_url(url)
            entries = await _entries(other, stream)
            await other.aclose()
        finally:
            await sink.close()
            server.terminate()
            await server.wait()
    received = [e["ce_id"] for e in entries]
    assert sorted(received) == sorted(e["id"] for e in events)
    for subject, chain in statuses_by_subject(events).items():
        ids = [e["ce_id"] for e in entries if e["ce_subject"] == subject]
        assert ids == [e["id"] for e in chain]


async def _first_error(redis: aioredis.Redis, worker: SinkWorker) -> str:
    payloads: Any = await redis.hvals(worker.queue.entries)
    errors = [Queued.load("", p).error for p in payloads]
    return next((e for e in errors if e), "")


async def test_a_refused_command_of_a_pipeline_fails_only_itself(redis: aioredis.Redis) -> None:
    """Replies are read one by one: an error in the middle leaves the others stored and the
    connection fit to use again."""
    stream = f"events-{secrets.token_hex(3)}"
    xadd = xadd_command(stream, None, stream_fields(sample_events(1)[0]))
    wrong_type = f"plain-{secrets.token_hex(3)}"
    await redis.set(wrong_type, "not a stream")
    refused = xadd_command(wrong_type, None, {"a": "b"})
    replies = await _pipeline(redis, xadd + refused + xadd, 3)
    # The stored ones answer with their entry id, the refused one with its error.
    assert isinstance(replies[0], bytes)
    assert isinstance(replies[2], bytes)
    assert "WRONGTYPE" in str(replies[1])
    assert await redis.xlen(stream) == 2
    assert await redis.ping()
