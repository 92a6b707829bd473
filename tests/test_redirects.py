"""Redirects are never followed: events go only to the configured URL, secrets only to Absorb."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from structlog.testing import capture_logs

from bridge.absorb.client import AbsorbClient
from bridge.absorb.transport import AbsorbTransport, Credentials
from bridge.config import HttpSinkConfig
from bridge.errors import AbsorbRequestError
from bridge.sinks.http import HttpSink
from tests.conftest import API_KEY, FAST_RETRY, PASSWORD, USERNAME
from tests.engine import put_events, sample_events, settle_worker, sink_worker
from tests.receivers import CatchAll, Receiver, Recorder

REDIRECTS = (301, 302, 303, 307, 308)


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


async def test_an_http_sink_never_follows_a_redirect(redis: aioredis.Redis) -> None:
    """301, 302, 303, 307, 308 in turn: each a failed try naming the Location (the URL's
    token masked), nothing sent there, and every event arrives signed at the configured URL
    once the receiver stops."""
    elsewhere = Recorder()
    # The receiver echoes the token of the sink's URL: the error must not show it.
    moved_to = await elsewhere.start() + "/moved?v=2&token=hook-token-42"
    shown = moved_to.replace("hook-token-42", "***")
    keys = [_secret()]

    async def redirect_first(n: int, _request: web.Request) -> tuple[int, dict[str, str]] | None:
        return (REDIRECTS[n], {"Location": moved_to}) if n < len(REDIRECTS) else None

    receiver = Receiver(secrets=keys, behaviour=redirect_first)
    config = HttpSinkConfig.model_validate(
        {"name": "hr", "type": "http", "url": await receiver.start() + "?token=hook-token-42",
         "secret": keys[0], "bearer_token": "receiver-token-1"}
    )  # fmt: skip
    sink = HttpSink(config)
    worker, store = await sink_worker(redis, sink, "redirects", schedule=(0,) + (0.01,) * 10)
    events = sample_events(3, subjects=1)
    await put_events(store, events)
    with capture_logs() as logs:
        await settle_worker(worker, lambda: len(receiver.accepted) == 3)
    assert receiver.ids() == [e["id"] for e in events]
    assert receiver.problems == []
    assert elsewhere.requests == []
    retried = [e for e in logs if e["event"] == "delivery.retrying"]
    assert len(retried) == len(REDIRECTS)
    for status, entry in zip(REDIRECTS, retried, strict=True):
        assert f"HTTP {status} redirecting to {shown}" in entry["error"]
        assert "hook-token-42" not in entry["error"]
    assert worker.delivered == 3
    await sink.close()
    await receiver.stop()
    await elsewhere.stop()


async def test_a_redirect_without_location_is_a_failed_try(redis: aioredis.Redis) -> None:
    """A bare 302 says so, and the event is tried again rather than counted delivered."""
    keys = [_secret()]

    async def bare_once(n: int, _request: web.Request) -> int | None:
        return 302 if n == 0 else None

    receiver = Receiver(secrets=keys, behaviour=bare_once)
    config = HttpSinkConfig.model_validate(
        {"name": "hr", "type": "http", "url": await receiver.start(), "secret": keys[0]}
    )
    sink = HttpSink(config)
    worker, store = await sink_worker(redis, sink, "redirects", schedule=(0, 0.01, 0.01))
    await put_events(store, sample_events(1))
    with capture_logs() as logs:
        await settle_worker(worker, lambda: len(receiver.accepted) == 1)
    [retried] = [e for e in logs if e["event"] == "delivery.retrying"]
    assert "HTTP 302 redirecting to nowhere (no Location header)" in retried["error"]
    assert receiver.requests == 2
    await sink.close()
    await receiver.stop()


class RedirectingAbsorb(CatchAll):
    """A stand-in for Absorb whose every endpoint answers `status` with a Location elsewhere."""

    def __init__(self, status: int, location: str) -> None:
        self.status = status
        self.location = location
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        path = request.path_qs
        return web.Response(status=self.status, headers={"Location": self.location + path})


@pytest.mark.parametrize("status", REDIRECTS)
async def test_absorb_credentials_never_follow_a_redirect(status: int) -> None:
    """A login or a call answered with a redirect to another host is an error naming the
    endpoint and that host; the other host receives nothing, least of all a secret."""
    elsewhere = Recorder()
    other = await elsewhere.start()
    absorb = RedirectingAbsorb(status, other)
    transport = AbsorbTransport(
        await absorb.start(),
        Credentials(api_key=API_KEY, username=USERNAME, password=PASSWORD),
        retry=FAST_RETRY,
    )
    client = AbsorbClient(transport)
    with pytest.raises(AbsorbRequestError) as login:
        await client.get_course_enrollment("00000000-0000-0000-0000-000000000001")
    token = "a-token-only-absorb-knows"
    await transport.token_cache.refresh(None, _returning(token))
    with pytest.raises(AbsorbRequestError) as call:
        await client.get_course_enrollment("00000000-0000-0000-0000-000000000001")
    await client.close()
    await absorb.stop()
    await elsewhere.stop()
    host = other.removeprefix("http://")
    assert str(login.value).startswith(f"POST /authenticate -> HTTP {status}: ")
    assert str(call.value).startswith(
        f"GET /enrollments/00000000-0000-0000-0000-000000000001 -> HTTP {status}: "
    )
    for error in (login.value, call.value):
        assert f"redirected to {host}" in str(error)
        assert not any(s in str(error) for s in (API_KEY, PASSWORD, token))
    assert absorb.requests == 2  # one try each: a redirect is not worth repeating
    assert elsewhere.requests == []  # no request at all, so none carrying a secret


def _returning(token: str) -> Any:
    async def login() -> str:
        return token

    return login
