"""A wrong password never hammers `/authenticate`: logins back off, for every replica together."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from datetime import datetime

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge import clock, health
from bridge.absorb.client import AbsorbClient
from bridge.absorb.login_guard import LoginPolicy
from bridge.absorb.token_cache import MemoryTokenCache, RedisTokenCache, TokenCache
from bridge.errors import AbsorbAuthError, AbsorbUnavailableError, BridgeError
from bridge.feeds import FeedSpec
from bridge.service import Bridge
from bridge.store import Store
from tests.conftest import USERNAME, MakeClient, SimHandle, free_port

WRONG = "not-the-password"
NEXT = re.compile(r"the next login goes at (\S+) \(in (\d+)s\)")


@pytest.fixture
def move_clock() -> Iterator[Callable[[float], None]]:
    """Move the bridge's clock forward by some seconds; put back when the test ends."""
    moved = 0.0

    def move(seconds: float) -> None:
        nonlocal moved
        moved += seconds
        clock.set_offset(moved)

    yield move
    clock.set_offset(0.0)


def _enrollment(sim: SimHandle) -> str:
    return next(iter(sim.sim.tenant.enrollments))


async def _refusals(clients: list[AbsorbClient], enrollment: str) -> list[str]:
    """Every caller asks at once; returns each one's error (all must fail)."""

    async def one(client: AbsorbClient) -> str:
        with pytest.raises(AbsorbAuthError) as e:
            await client.get_course_enrollment(enrollment)
        return str(e.value)

    return await asyncio.gather(*(one(c) for c in clients))


async def _logins_tried(sim: SimHandle) -> int:
    """`/authenticate` calls the simulator refused: with a wrong password, its every 401."""
    return int((await sim.state())["requests"].get("401", 0))


def _wait_s(message: str) -> int:
    found = NEXT.search(message)
    assert found, message
    datetime.fromisoformat(found.group(1))  # a real instant, in the message
    return int(found.group(2))


async def test_two_replicas_with_a_wrong_password_back_off_together(
    simulator: SimHandle,
    make_client: MakeClient,
    redis: aioredis.Redis,
    move_clock: Callable[[float], None],
) -> None:
    """Two transports on one Redis, twenty callers each: one refused login per back-off, which
    doubles (30 s, 60 s, 120 s); every error says when the next login goes; once the back-off
    is over a login goes again, and fixing the password lets a login through at once."""
    enrollment = _enrollment(simulator)

    def cache() -> TokenCache:
        return RedisTokenCache(redis, prefix="backoff", base_url=simulator.url, username=USERNAME)

    replicas = [make_client(simulator.url, password=WRONG, token_cache=cache()) for _ in (1, 2)]
    callers = replicas * 20
    waits = []
    for round_ in range(1, 4):
        errors = await _refusals(callers, enrollment)
        assert await _logins_tried(simulator) == round_
        times = "once" if round_ == 1 else f"{round_} times in a row"
        assert all("Absorb refused the username, password or API key" in e for e in errors)
        assert all(f", {times}; the next login goes at" in e for e in errors), errors[:2]
        assert all(WRONG not in e for e in errors)
        waits.append(max(_wait_s(e) for e in errors))
        # Asking again before the back-off is over reaches nobody.
        await _refusals(callers, enrollment)
        move_clock(waits[-1] / 2)
        await _refusals(callers, enrollment)
        assert await _logins_tried(simulator) == round_
        move_clock(waits[-1] / 2 + 1)
    assert [round(w, -1) for w in waits] == [30, 60, 120]
    assert (await simulator.state())["logins"] == 0
    fixed = make_client(simulator.url, token_cache=cache())
    # Other credentials are not held back by the back-off, and their token serves everyone.
    await fixed.get_course_enrollment(enrollment)
    await asyncio.gather(*(c.get_course_enrollment(enrollment) for c in callers))
    assert (await simulator.state())["logins"] == 1
    assert await _logins_tried(simulator) == 3


async def test_logins_are_paced_even_when_absorb_accepts_them(
    simulator: SimHandle, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """Tokens that die as fast as they are made (another client of the same admin, say): the
    replicas together log in at most five times a minute, then say when the next may go."""
    enrollment = _enrollment(simulator)
    replicas = [
        make_client(
            simulator.url,
            token_cache=RedisTokenCache(
                redis, prefix="pace", base_url=simulator.url, username=USERNAME
            ),
        )
        for _ in (1, 2)
    ]
    paced = None
    for n in range(8):
        await simulator.control("POST", "tokens/expire")
        try:
            await replicas[n % 2].get_course_enrollment(enrollment)
        except AbsorbAuthError as e:
            paced = str(e)
            break
    assert (await simulator.state())["logins"] == 5
    assert paced is not None
    assert "5 logins to Absorb within 60s already; the next goes at" in paced


async def test_the_pace_repeats_why_the_last_login_failed(
    make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """Absorb unreachable: five logins in the minute fail as such, and the sixth caller is told
    both that logins are paced and why the last one failed, so health names the real cause."""
    url = f"http://127.0.0.1:{free_port()}"
    client = make_client(
        url, token_cache=RedisTokenCache(redis, prefix="down", base_url=url, username=USERNAME)
    )
    for _ in range(5):
        with pytest.raises(AbsorbUnavailableError, match="cannot connect"):
            await client.get_course_enrollment("00000000-0000-0000-0000-000000000001")
    with pytest.raises(AbsorbAuthError) as paced:
        await client.get_course_enrollment("00000000-0000-0000-0000-000000000001")
    message = str(paced.value)
    assert "5 logins to Absorb within 60s already; the next goes at" in message
    assert "the last one failed: POST /authenticate: gave up after 5 tries; last: cannot" in message


async def test_one_process_backs_off_in_memory(
    simulator: SimHandle, make_client: MakeClient, move_clock: Callable[[float], None]
) -> None:
    """Without Redis the back-off lives in the token cache: many callers, one refused login."""
    enrollment = _enrollment(simulator)
    policy = LoginPolicy(backoff_base_s=10, backoff_cap_s=15)
    client = make_client(
        simulator.url, password=WRONG, token_cache=MemoryTokenCache(login_policy=policy)
    )
    errors = await _refusals([client] * 30, enrollment)
    assert await _logins_tried(simulator) == 1
    assert max(_wait_s(e) for e in errors) == 10
    move_clock(11)
    errors = await _refusals([client] * 30, enrollment)
    assert max(_wait_s(e) for e in errors) == 15  # doubled, then held at the cap
    move_clock(16)
    errors = await _refusals([client] * 30, enrollment)
    assert max(_wait_s(e) for e in errors) == 15
    assert await _logins_tried(simulator) == 3


async def test_a_refused_login_makes_the_bridge_not_ready_with_the_reason(
    simulator: SimHandle, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """A sweep that cannot log in puts the reason and the next try in /readyz, which says 503."""
    course = next(iter(simulator.sim.tenant.courses))
    bridge = Bridge(
        client=make_client(simulator.url, password=WRONG),
        store=Store(redis, "unready"),
        feeds=[FeedSpec(name="f", resource="course_enrollments", course_ids=(course,))],
        sinks=[],
        routes=[],
        source=simulator.url,
    )
    await bridge.sweep_once(force=True)
    runner, port = await health.serve(bridge.readiness, "127.0.0.1", 0)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as reply,
        ):
            status, report = reply.status, await reply.json()
    finally:
        await runner.cleanup()
    assert status == 503
    assert report["ready"] is False
    assert "Absorb refused the username, password or API key" in report["checks"]["absorb"]
    assert _wait_s(report["checks"]["absorb"]) > 0
    assert "check the absorb settings" in report["checks"]["absorb"]
    assert WRONG not in str(report)


def test_the_default_back_off_doubles_from_half_a_minute_to_ten() -> None:
    """30 s, 1, 2, 4, 8 min, then 10 min for as long as the credentials stay wrong."""
    policy = LoginPolicy()
    assert policy.backoffs_ms() == [30_000, 60_000, 120_000, 240_000, 480_000, 600_000]
    assert policy.backoff_s(50) == 600
    with pytest.raises(BridgeError, match="backoff_cap_s is below backoff_base_s"):
        LoginPolicy(backoff_base_s=60, backoff_cap_s=30)
    with pytest.raises(BridgeError, match="must be positive"):
        LoginPolicy(backoff_base_s=0)
