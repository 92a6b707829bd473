"""The http sink through the real delivery core, against receivers that verify signatures."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from structlog.testing import capture_logs

from bridge.config import HttpSinkConfig
from bridge.delivery import Circuit, SinkWorker
from bridge.routes import Route
from bridge.sinks.http import HttpSink
from bridge.store import Store
from tests.conftest import free_port
from tests.engine import put_events, sample_events, statuses_by_subject
from tests.receivers import Receiver, settle

FAST = (0, 0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _sink(url: str, secrets_: list[str], **extra: Any) -> HttpSink:
    config = HttpSinkConfig.model_validate(
        {"name": "hr", "type": "http", "url": url, "secrets": secrets_, "timeout": "300ms", **extra}
    )
    return HttpSink(config)


async def _worker(
    redis: aioredis.Redis, sink: HttpSink, **options: Any
) -> tuple[SinkWorker, Store]:
    store = Store(redis, f"http-{secrets.token_hex(3)}")
    worker = SinkWorker(
        redis, store.prefix, sink, [Route(sinks=("hr",))], consumer="test",
        schedule=options.pop("schedule", FAST), circuit=Circuit(threshold=10_000), **options,
    )  # fmt: skip
    await worker.setup()
    await sink.start()
    return worker, store


async def _run(worker: SinkWorker) -> int:
    return await worker.feed_once() + await worker.deliver_once()


def _in_order(received: list[dict[str, Any]], sent: list[dict[str, Any]]) -> None:
    firsts: dict[str, dict[str, Any]] = {}
    for event in received:
        firsts.setdefault(str(event["id"]), event)
    got = {
        s: [e["id"] for e in chain]
        for s, chain in statuses_by_subject(list(firsts.values())).items()
    }
    want = {s: [e["id"] for e in chain] for s, chain in statuses_by_subject(sent).items()}
    assert got == want


async def test_every_event_arrives_signed_once_and_in_order(redis: aioredis.Redis) -> None:
    """Sixty events over six enrollments: each once, in order per subject, signed and parseable."""
    keys = [_secret(), _secret()]
    receiver = Receiver(secrets=keys)
    sink = _sink(await receiver.start(), keys)
    worker, store = await _worker(redis, sink)
    events = sample_events(60, subjects=6)
    await put_events(store, events)
    await settle(lambda: _run(worker), lambda: len(receiver.accepted) == 60)
    assert sorted(receiver.ids()) == sorted(e["id"] for e in events)
    _in_order(receiver.accepted, events)
    assert receiver.problems == []
    first = receiver.headers[0]
    assert first["content-type"] == "application/cloudevents+json"
    assert first["webhook-id"] == receiver.accepted[0]["id"]
    assert len(first["webhook-signature"].split(" ")) == 2  # one signature per rotating secret
    assert receiver.accepted[0]["status"] in {"NotStarted", "InProgress", "Complete", "Failed"}
    await sink.close()
    await receiver.stop()


async def test_a_failing_receiver_gets_everything_once_it_recovers(redis: aioredis.Redis) -> None:
    """500s, timeouts, 429s with Retry-After, refused connections, then recovery: all in order."""
    keys = [_secret()]
    port = free_port()
    events = sample_events(40, subjects=4)

    async def flaky(n: int, _request: web.Request) -> int | tuple[int, dict[str, str]] | None:
        if n < 30:
            kind = n % 3
            if kind == 0:
                return 500
            if kind == 1:
                await asyncio.sleep(0.5)  # longer than the sink's 300 ms timeout
                return 503
            return (429, {"Retry-After": "0.1"})
        return None

    receiver = Receiver(secrets=keys, behaviour=flaky)
    sink = _sink(f"http://127.0.0.1:{port}/hook", keys)
    worker, store = await _worker(redis, sink, schedule=(0,) + (0.05,) * 40)
    await put_events(store, events)
    for _ in range(5):  # nobody listens yet: connections are refused
        await _run(worker)
        await asyncio.sleep(0.05)
    assert receiver.accepted == []
    await receiver.start(port)
    await settle(lambda: _run(worker), lambda: len(set(receiver.ids())) == 40, timeout_s=40)
    _in_order(receiver.accepted, events)
    assert receiver.problems == []
    assert worker.failed > 30
    await sink.close()
    await receiver.stop()


async def test_exhausted_events_are_dead_lettered_and_replay_delivers_them(
    redis: aioredis.Redis,
) -> None:
    """After the last try an event is a dead letter with its error; replay delivers it."""
    keys = [_secret()]
    broken = True

    async def until_fixed(_n: int, _request: web.Request) -> int | None:
        return 502 if broken else None

    receiver = Receiver(secrets=keys, behaviour=until_fixed)
    sink = _sink(await receiver.start(), keys)
    worker, store = await _worker(redis, sink, schedule=(0, 0.02, 0.02))
    events = sample_events(6, subjects=2)
    await put_events(store, events)
    await settle(lambda: _run(worker), lambda: len(receiver.accepted) == 0 and worker.failed >= 18)
    await settle(lambda: _run(worker), lambda: True)
    letters = await worker.queue.dead_letters()
    assert sorted(json.loads(lt.queued.event)["id"] for lt in letters) == sorted(
        e["id"] for e in events
    )
    assert all("HTTP 502" in (letter.queued.error or "") for letter in letters)
    assert all(letter.queued.attempts == 3 for letter in letters)
    broken = False
    moved = await worker.queue.replay(letters, 0)
    assert moved == 6
    await settle(lambda: _run(worker), lambda: len(receiver.accepted) == 6)
    _in_order(receiver.accepted, events)
    assert await worker.queue.dead_letters() == []
    await sink.close()
    await receiver.stop()


async def test_410_disables_the_sink_loudly(redis: aioredis.Redis) -> None:
    """A receiver answering 410 Gone disables the sink: no more tries, an error log, a reason."""
    keys = [_secret()]

    async def gone(_n: int, _request: web.Request) -> int:
        return 410

    receiver = Receiver(secrets=keys, behaviour=gone)
    sink = _sink(await receiver.start(), keys)
    worker, store = await _worker(redis, sink)
    await put_events(store, sample_events(5, subjects=5))
    with capture_logs() as logs:
        for _ in range(10):
            await _run(worker)
    reason = await worker.queue.disabled()
    assert reason is not None
    assert "410" in reason
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["sink.disabled"]
    tried = receiver.requests
    for _ in range(5):
        await _run(worker)
    assert receiver.requests == tried
    assert (await worker.queue.counts())["queued"] == 5  # kept, not lost
    await sink.close()
    await receiver.stop()


async def test_retry_after_is_honoured(redis: aioredis.Redis) -> None:
    """A 429 with `Retry-After: 30` puts the next try at least thirty seconds out."""
    keys = [_secret()]

    async def busy(_n: int, _request: web.Request) -> tuple[int, dict[str, str]]:
        return (429, {"Retry-After": "30"})

    receiver = Receiver(secrets=keys, behaviour=busy)
    sink = _sink(await receiver.start(), keys)
    worker, store = await _worker(redis, sink)
    await put_events(store, sample_events(1))
    await _run(worker)
    loop_now_ms = (await redis.time())[0] * 1000
    [(entry, score)] = await redis.zrange(worker.queue.due, 0, -1, withscores=True)
    assert score >= loop_now_ms + 29_000
    assert receiver.requests == 1
    assert entry
    await sink.close()
    await receiver.stop()


async def test_binary_mode_and_extra_auth(redis: aioredis.Redis) -> None:
    """Binary mode puts attributes in ce- headers and only `data` in the body; auth goes along."""
    keys = [_secret()]
    receiver = Receiver(secrets=keys)
    sink = _sink(
        await receiver.start(), keys, mode="binary", bearer_token="tok-123",
        headers={"X-Tenant": "acme"},
    )  # fmt: skip
    worker, store = await _worker(redis, sink)
    events = sample_events(3, subjects=3)
    await put_events(store, events)
    await settle(lambda: _run(worker), lambda: len(receiver.accepted) == 3)
    headers = receiver.headers[0]
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-type"] == "absorb.course_enrollment.status_changed"
    assert headers["authorization"] == "Bearer tok-123"
    assert headers["x-tenant"] == "acme"
    assert receiver.accepted[0]["data"]["changed"] == ["status"]
    assert receiver.problems == []
    await sink.close()
    await receiver.stop()


async def test_a_body_template_shapes_the_payload(redis: aioredis.Redis, tmp_path: Any) -> None:
    """With a Jinja2 template the receiver gets its own JSON shape, still signed."""
    keys = [_secret()]
    template = tmp_path / "hris.json.j2"
    template.write_text(
        '{"employee": {{ current.fullName | tojson }}, "result": "{{ event.status }}"}'
    )
    received: list[bytes] = []

    async def keep(_n: int, request: web.Request) -> int:
        received.append(await request.read())
        return 200

    receiver = Receiver(secrets=keys, behaviour=keep)
    sink = _sink(await receiver.start(), keys, template=str(template))
    worker, store = await _worker(redis, sink)
    await put_events(store, sample_events(2, subjects=2))
    await settle(lambda: _run(worker), lambda: len(received) == 2)
    assert received[0] == b'{"employee": "Ada Lovelace", "result": "InProgress"}'
    assert receiver.problems == []
    await sink.close()
    await receiver.stop()


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("current.score + current.fullName", "TypeError"),
        ("current.nothing", "UndefinedError"),
        ("event.__class__.__mro__", "SecurityError"),
    ],
)
async def test_a_template_error_is_a_failed_try_naming_file_and_line(
    redis: aioredis.Redis, tmp_path: Any, expression: str, error: str
) -> None:
    """A template that raises for some events (a type error, an undefined name, a sandbox
    violation) fails those tries, naming the file and the line, until they are dead letters;
    every other event still arrives and the sink goes on."""
    keys = [_secret()]
    template = tmp_path / "hris.json.j2"
    template.write_text(
        '{"employee": {{ current.fullName | tojson }},\n'
        f' "score": {{{{ ({expression}) if event.status == "Complete" else current.score }}}}}}\n'
    )
    received: list[bytes] = []

    async def keep(_n: int, request: web.Request) -> int:
        received.append(await request.read())
        return 200

    receiver = Receiver(secrets=keys, behaviour=keep)
    sink = _sink(await receiver.start(), keys, template=str(template))
    worker, store = await _worker(redis, sink, schedule=(0, 0.01, 0.01))
    events = sample_events(12, subjects=4)
    broken = [e["id"] for e in events if e["status"] == "Complete"]
    assert 0 < len(broken) < len(events)
    await put_events(store, events)
    await settle(
        lambda: _run(worker),
        lambda: receiver.requests == len(events) - len(broken) and worker.failed == 3 * len(broken),
    )
    letters = await worker.queue.dead_letters()
    assert sorted(json.loads(lt.queued.event)["id"] for lt in letters) == sorted(broken)
    for letter in letters:
        assert f"the template {template}, line 2 failed" in (letter.queued.error or "")
        assert error in (letter.queued.error or "")
    assert [json.loads(body)["score"] for body in received] == [90] * len(received)
    assert receiver.problems == []
    await sink.close()
    await receiver.stop()
