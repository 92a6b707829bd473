"""The slack sink through the real delivery core, against an in-process stand-in for Slack."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from bridge import samples
from bridge.config import SlackSinkConfig
from bridge.delivery import SinkWorker
from bridge.sinks.base import Delivery, SinkError
from bridge.sinks.slack import SlackSink, default_message
from bridge.sinks.stdout import describe
from bridge.store import Store
from tests.conftest import free_port
from tests.engine import put_events, sample_events, settle_worker, sink_worker, statuses_by_subject
from tests.receivers import Recorder

FAST = (0, 0.05, 0.05, 0.05, 0.05, 0.05)
REDIRECTS = (301, 302, 303, 307, 308)
#: The secret part of an incoming-webhook URL: whoever has it can post.
HOOK_PATH = f"/services/T0TESTTEAM/B0TESTHOOK/{secrets.token_hex(12)}"


class FakeSlack:
    """Stands in for hooks.slack.com over TLS: records posts, takes `per_s` a second, else 429.

    `answers` are given (status, body) or (status, body, headers) to the first requests,
    before the normal behaviour.
    """

    def __init__(self, tls: ssl.SSLContext, *, per_s: float = 1.0) -> None:
        self.tls = tls
        # Slack: the sender paces departures, and on a busy host one post may arrive late
        # and the next on time. Unpaced posts would arrive milliseconds apart.
        self.min_interval_s = 0.5 / per_s
        self.answers: list[tuple[int, str] | tuple[int, str, dict[str, str]]] = []
        self.accepted: list[dict[str, Any]] = []
        self.accepted_at: list[float] = []
        self.throttled_at: list[float] = []
        self.requests = 0
        self._runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> str:
        """Listen on loopback; returns the webhook URL."""
        app = web.Application()
        app.router.add_post(HOOK_PATH, self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=self.tls)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"https://127.0.0.1:{port}{HOOK_PATH}"

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    def texts(self) -> list[str]:
        """The `text` of every accepted message, in arrival order."""
        return [m["text"] for m in self.accepted]

    async def _hook(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.answers:
            status, body, *headers = self.answers.pop(0)
            return web.Response(status=status, text=body, headers=headers[0] if headers else None)
        now = asyncio.get_running_loop().time()
        if self.accepted_at and now - self.accepted_at[-1] < self.min_interval_s:
            self.throttled_at.append(now)
            return web.Response(status=429, text="rate_limited", headers={"Retry-After": "1"})
        self.accepted_at.append(now)
        self.accepted.append(json.loads(await request.read()))
        return web.Response(text="ok")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: the server's context and a client trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return server, ssl.create_default_context(cadata=pem.decode())


@pytest.fixture
async def session(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> AsyncIterator[Any]:
    """An HTTP session trusting the stand-in's certificate."""
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls[1]))
    yield http
    await http.close()


@pytest.fixture
async def slack(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> AsyncIterator[FakeSlack]:
    """The stand-in, not yet started (tests choose its pace)."""
    fake = FakeSlack(tls[0])
    yield fake
    await fake.stop()


def _sink(url: str, session: aiohttp.ClientSession, **extra: Any) -> SlackSink:
    config = SlackSinkConfig.model_validate(
        {"name": "chat", "type": "slack", "webhook_url": url, **extra}
    )
    return SlackSink(config, session=session)


async def _worker(
    redis: aioredis.Redis, sink: SlackSink, **options: Any
) -> tuple[SinkWorker, Store]:
    """A worker paced as the daemon paces it: at the sink's `rate_limit_per_s` unless told."""
    options.setdefault("rate_limit_per_s", sink.config.rate_limit_per_s)
    options.setdefault("schedule", FAST)
    return await sink_worker(redis, sink, "slack", **options)


async def _settle(worker: SinkWorker, done: Callable[[], bool], timeout_s: float = 20) -> None:
    await settle_worker(worker, done, timeout_s)


def _events(*changes: tuple[str | None, str, float | None]) -> list[dict[str, Any]]:
    """Events of one learner each, with the given (previous status, status, score)."""
    events = sample_events(len(changes), subjects=len(changes))
    for n, (event, (previous, status, score)) in enumerate(zip(events, changes, strict=True)):
        event["status"] = status
        if previous is None:
            event.pop("previousstatus")
            event["type"] = "absorb.course_enrollment.created"
        else:
            event["previousstatus"] = previous
        event["data"]["current"].update(fullName=f"Learner {n}", score=score)
    return events


async def test_every_event_arrives_once_paced_at_one_a_second(
    redis: aioredis.Redis, slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    """Five events at the default pace: each posted once, in order per learner, never a 429."""
    sink = _sink(await slack.start(), session)
    assert sink.config.rate_limit_per_s == 1.0
    worker, store = await _worker(redis, sink)
    events = sample_events(5, subjects=2)
    for n, event in enumerate(events):
        event["data"]["current"]["fullName"] = f"Learner {n}"
    await put_events(store, events)
    await _settle(worker, lambda: worker.delivered == 5)
    names = [text.split("*")[1] for text in slack.texts()]
    assert sorted(names) == [f"Learner {n}" for n in range(5)]
    for chain in statuses_by_subject(events).values():
        wanted = [e["data"]["current"]["fullName"] for e in chain]
        assert [name for name in names if name in wanted] == wanted
    assert slack.throttled_at == []
    assert slack.requests == 5


async def test_default_messages_name_learner_course_status_and_score(
    redis: aioredis.Redis, slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    """Completed, failed, another transition and a new enrollment read as a person would write."""
    slack.min_interval_s = 0.0
    sink = _sink(await slack.start(), session, rate_limit_per_s=50)
    worker, store = await _worker(redis, sink)
    events = _events(
        ("InProgress", "Complete", 92),
        ("InProgress", "Failed", 40.5),
        ("InProgress", "NotComplete", None),
        (None, "NotStarted", None),
    )
    await put_events(store, events)
    await _settle(worker, lambda: worker.delivered == 4)
    assert sorted(slack.texts()) == sorted(
        [
            ":white_check_mark: *Learner 0* completed *First Aid* (score 92)",
            ":x: *Learner 1* failed *First Aid* (score 40.5)",
            ":arrows_counterclockwise: *Learner 2* · *First Aid*: InProgress → NotComplete",
            ":new: *Learner 3* enrolled in *First Aid* (NotStarted)",
        ]
    )
    for message in slack.accepted:
        section, context = message["blocks"]
        assert section["text"] == {"type": "mrkdwn", "text": message["text"]}
        assert context["elements"][0]["text"].startswith("<!date^1767225")
        assert "course enrollment" in context["elements"][0]["text"]


def test_an_attempt_is_named_by_its_learner_from_the_parent() -> None:
    """An attempt record names no learner: Slack's default message and the stdout line
    take the learner from `data.parent`."""
    event = samples.examples()["absorb.attempt.status_changed"]
    assert default_message(event)["text"].startswith(":white_check_mark: *Test Learner* completed")
    assert "Test Learner" in describe(event)
    del event["data"]["parent"]
    assert default_message(event)["text"].startswith(":white_check_mark: *A learner* completed")


async def test_a_template_is_used_for_its_status_then_its_change(
    redis: aioredis.Redis, slack: FakeSlack, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """`Complete` wins over `status_changed`; a template without `text` gets the default line."""
    complete = tmp_path / "complete.json.j2"
    complete.write_text(
        '{"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": '
        '{{ ("Well done " ~ learner ~ " on " ~ course ~ ", score " ~ score) | tojson }}}}]}'
    )
    changed = tmp_path / "changed.json.j2"
    changed.write_text('{"text": {{ (event.id ~ " " ~ previous_status ~ ">" ~ status) | tojson }}}')
    slack.min_interval_s = 0.0
    templates = {"Complete": str(complete), "status_changed": str(changed)}
    sink = _sink(await slack.start(), session, rate_limit_per_s=50, templates=templates)
    worker, store = await _worker(redis, sink)
    events = _events(("InProgress", "Complete", 92), ("Complete", "Failed", 10))
    await put_events(store, events)
    await _settle(worker, lambda: worker.delivered == 2)
    by_text = {m["text"]: m for m in slack.accepted}
    done = by_text[":white_check_mark: *Learner 0* completed *First Aid* (score 92)"]
    assert done["blocks"][0]["text"]["text"] == "Well done Learner 0 on First Aid, score 92"
    assert f"{events[1]['id']} Complete>Failed" in by_text


async def test_a_broken_template_is_a_sink_error(
    slack: FakeSlack, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """An undefined name, a type error, a sandbox violation, a payload not JSON: SinkError
    naming the file and the line, nothing posted."""
    undefined = tmp_path / "undefined.j2"
    undefined.write_text('{"text": "{{ nobody }}"}')
    not_json = tmp_path / "not-json.j2"
    not_json.write_text("{{ learner }} completed")
    typed = tmp_path / "typed.j2"
    typed.write_text('{\n"text": "{{ score + learner }}"}')
    unsafe = tmp_path / "unsafe.j2"
    unsafe.write_text('{"text": {{ event.__class__.__mro__ | string | tojson }}}')
    url = await slack.start()
    event = _events(("InProgress", "Complete", 1))[0]
    delivery = Delivery(event, json.dumps(event), "f", "c1")
    for path, problem in (
        (undefined, f"{undefined}, line 1 failed .*UndefinedError: 'nobody' is undefined"),
        (not_json, "not JSON"),
        (typed, f"{typed}, line 2 failed .*TypeError"),
        (unsafe, f"{unsafe}, line 1 failed .*SecurityError"),
    ):
        sink = _sink(url, session, templates={"default": str(path)})
        with pytest.raises(SinkError, match=problem):
            await sink.send(delivery)
        await sink.close()
    assert slack.requests == 0


async def test_a_429_retry_after_postpones_the_event_by_at_least_that_long(
    redis: aioredis.Redis, slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    """Sent unpaced, the second message gets 429 Retry-After: 1 and is not tried for a second."""
    sink = _sink(await slack.start(), session)
    worker, store = await _worker(redis, sink, rate_limit_per_s=None)
    await put_events(store, sample_events(2, subjects=2))
    await worker.feed_once()
    before_ms = int(datetime.now(UTC).timestamp() * 1000)
    assert await worker.deliver_once() == 1
    assert len(slack.throttled_at) == 1
    due: Any = await redis.zrange(worker.queue.due, 0, -1, withscores=True)
    assert len(due) == 1
    assert due[0][1] >= before_ms + 1000
    await _settle(worker, lambda: worker.delivered == 2)
    assert len(slack.throttled_at) == 1  # the worker waited instead of hammering
    assert slack.accepted_at[1] - slack.throttled_at[0] >= 0.99


async def test_no_service_disables_the_sink(
    redis: aioredis.Redis, slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    """A 404 `no_service` (the webhook was removed) disables the sink and keeps its events."""
    slack.answers = [(404, "no_service")] * 10
    sink = _sink(await slack.start(), session)
    worker, store = await _worker(redis, sink)
    await put_events(store, sample_events(3, subjects=1))
    await _settle(worker, lambda: worker.failed >= 1)
    reason = await worker.queue.disabled()
    assert reason is not None
    assert "no_service" in reason
    assert await worker.deliver_once() == 0
    counts = await worker.queue.counts()
    assert counts["queued"] == 3
    assert counts["dead_lettered"] == 0
    assert slack.requests == 1


async def test_the_webhook_url_never_appears_in_logs_or_errors(
    redis: aioredis.Redis, slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    """Refused connections, a 500 echoing the URL, a 429, a dead webhook: the URL stays hidden."""
    port = free_port()
    url = f"https://127.0.0.1:{port}{HOOK_PATH}"
    sink = _sink(url, session)
    errors: list[str] = []
    event = sample_events(1)[0]
    with pytest.raises(SinkError) as refused:
        await sink.send(Delivery(event, json.dumps(event), "f", "c1"))
    errors.append(str(refused.value))
    slack.answers = [(500, f"internal error handling POST {url}"), (429, "rate_limited")]
    slack.answers.append((404, "no_service"))
    worker, store = await _worker(redis, sink, rate_limit_per_s=None, schedule=(0,) + (0.05,) * 20)
    await put_events(store, sample_events(2, subjects=1))
    with capture_logs() as logs:
        for _ in range(5):  # nobody listens yet
            await worker.feed_once()
            await worker.deliver_once()
            await asyncio.sleep(0.06)
        await slack.start(port)
        await _settle(worker, lambda: slack.requests == 3, timeout_s=10)
    assert any(e["event"] == "delivery.retrying" for e in logs)
    assert any(e["event"] == "sink.disabled" for e in logs)
    errors += [str(e) for e in logs]
    errors.append(await worker.queue.disabled() or "")
    secret = HOOK_PATH.rsplit("/", 1)[-1]
    assert errors
    assert not [text for text in errors if secret in text or HOOK_PATH in text]
    assert any("***" in text for text in errors)  # the echoed URL was masked, not dropped


async def test_a_redirect_is_never_followed(
    redis: aioredis.Redis, slack: FakeSlack, session: aiohttp.ClientSession
) -> None:
    """301, 302, 303, 307 and 308 in turn: each a failed try naming the Location (the
    webhook's secret path masked), nothing sent there, then the message reaches the webhook."""
    elsewhere = Recorder()
    other = await elsewhere.start()
    slack.answers = [(status, "", {"Location": other + HOOK_PATH}) for status in REDIRECTS]
    sink = _sink(await slack.start(), session)
    worker, store = await _worker(redis, sink, rate_limit_per_s=None)
    await put_events(store, sample_events(1))
    with capture_logs() as logs:
        await _settle(worker, lambda: worker.delivered == 1)
    await elsewhere.stop()
    assert elsewhere.requests == []
    assert slack.requests == len(REDIRECTS) + 1
    assert len(slack.accepted) == 1
    retried = [e["error"] for e in logs if e["event"] == "delivery.retrying"]
    assert len(retried) == len(REDIRECTS)
    for status, error in zip(REDIRECTS, retried, strict=True):
        assert f"HTTP {status} redirecting to {other}***" in error
        assert HOOK_PATH not in error


SHIPPED_SLACK_TEMPLATE = (
    Path(__file__).resolve().parent.parent / "config" / "templates" / "slack-complete.json.j2"
)


async def test_the_shipped_completion_template_renders_block_kit() -> None:
    """config/templates/slack-complete.json.j2, which the README and config/slack.yaml
    point to, renders the sample completion as Block Kit with the learner and course."""
    from bridge import clock, samples
    from bridge.sinks.slack import SlackSink

    template = SHIPPED_SLACK_TEMPLATE
    config = SlackSinkConfig.model_validate(
        {
            "name": "channel",
            "type": "slack",
            "webhook_url": "https://hooks.slack.com/services/T0/B0/xyz",
            "templates": {"Complete": str(template)},
        }
    )
    sink = SlackSink(config)
    await sink.start()
    event = samples.status_changed("https://rest.myabsorb.com", clock.now())
    try:
        message = sink.payload(event)
    finally:
        await sink.close()
    assert message["blocks"][0]["text"]["text"] == "Course completed: absorb-bridge test course"
    fields = " ".join(f["text"] for f in message["blocks"][1]["fields"])
    assert "Test Learner" in fields
    assert "92" in fields
    assert event["id"] in fields
    assert message["text"]
