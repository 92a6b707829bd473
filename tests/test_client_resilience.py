"""How the client copes with what Absorb really does: token churn, throttling, failures."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from structlog.testing import capture_logs

from bridge.absorb.client import AbsorbClient
from bridge.absorb.token_cache import MemoryTokenCache, RedisTokenCache
from bridge.absorb.transport import RetryPolicy
from bridge.errors import AbsorbAuthError, AbsorbResponseError, AbsorbUnavailableError
from tests.conftest import API_KEY, PASSWORD, USERNAME, MakeClient, SimHandle, free_port
from tests.receivers import CatchAll


async def _course(sim: SimHandle) -> str:
    return next(iter(sim.sim.tenant.courses))


async def _touch(client: AbsorbClient, course: str) -> int:
    return len([e async for e in client.list_course_enrollments(course)])


async def test_a_second_login_invalidates_the_first_token(
    simulator: SimHandle, make_client: MakeClient
) -> None:
    """Two clients with their own caches knock each other out, and each recovers by logging in."""
    course = await _course(simulator)
    a, b = make_client(simulator.url), make_client(simulator.url)
    await _touch(a, course)
    await _touch(b, course)  # b's login makes a's token stale
    with capture_logs() as logs:
        await _touch(a, course)  # 401, log in again, retry
    assert (await simulator.state())["logins"] == 3
    assert [e["event"] for e in logs].count("absorb.authenticated") == 1


async def test_a_shared_token_cache_keeps_workers_from_fighting(
    simulator: SimHandle, make_client: MakeClient, redis: aioredis.Redis
) -> None:
    """Workers sharing a Redis token cache log in once, and once more after the token dies."""
    course = await _course(simulator)

    def cache() -> RedisTokenCache:
        return RedisTokenCache(redis, prefix="test", base_url=simulator.url, username=USERNAME)

    workers = [make_client(simulator.url, token_cache=cache()) for _ in range(4)]
    await asyncio.gather(*(_touch(w, course) for w in workers))
    assert (await simulator.state())["logins"] == 1
    await simulator.control("POST", "tokens/expire")
    await asyncio.gather(*(_touch(w, course) for w in workers * 3))
    assert (await simulator.state())["logins"] == 2
    assert await workers[0].transport.token_cache.get() is not None


async def test_tokens_expire_on_the_simulators_clock(
    client: AbsorbClient, simulator: SimHandle
) -> None:
    """After four hours of Absorb time the token is refused and the client logs in again."""
    course = await _course(simulator)
    await _touch(client, course)
    await simulator.control("POST", "clock", {"advance_s": 4 * 3600 + 1})
    await _touch(client, course)
    assert (await simulator.state())["logins"] == 2
    assert (await simulator.state())["requests"]["401"] == 1


async def test_memory_cache_logs_in_once_for_concurrent_callers(
    simulator: SimHandle, make_client: MakeClient
) -> None:
    """Many calls that start together on one client share one login."""
    course = await _course(simulator)
    client = make_client(simulator.url, token_cache=MemoryTokenCache())
    await asyncio.gather(*(_touch(client, course) for _ in range(10)))
    assert (await simulator.state())["logins"] == 1


class CarelessAbsorb(CatchAll):
    """Answers every call with 401 and a body that echoes the request: body, headers and all.

    Logins succeed when `accept_logins`, each with a new token; calls are still refused.
    """

    def __init__(self, *, accept_logins: bool = False) -> None:
        self.accept_logins = accept_logins
        self.tokens: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/authenticate" and self.accept_logins:
            self.tokens.append(f"token-{len(self.tokens)}-{secrets.token_hex(8)}")
            return web.json_response(self.tokens[-1])
        sent = await request.json() if request.can_read_body else {}
        key, token = request.headers.get("x-api-key"), request.headers.get("Authorization")
        echo = f"Denied: {sent.get('password')} {sent.get('privateKey') or key} {token}"
        return web.json_response({"message": echo}, status=401)


async def test_bad_credentials_fail_clearly_without_showing_them(make_client: MakeClient) -> None:
    """A refused login names the call and what Absorb said, with every secret it echoed
    masked (shown as ***, not dropped)."""
    absorb = CarelessAbsorb()
    client = make_client(await absorb.start(), password="wrong-password-123")
    with pytest.raises(AbsorbAuthError) as e:
        await client.get_course_enrollment("00000000-0000-0000-0000-000000000001")
    await absorb.stop()
    message = str(e.value)
    assert message.startswith("POST /authenticate -> HTTP 401: Absorb refused the username")
    assert 'it said: {"message": "Denied: *** ***' in message  # masked, not dropped
    assert "wrong-password-123" not in message
    assert API_KEY not in message


async def test_a_refused_call_shows_no_token(make_client: MakeClient) -> None:
    """Calls refused even with a fresh token: the error names the call, and the tokens and the
    API key the server echoed are masked."""
    absorb = CarelessAbsorb(accept_logins=True)
    client = make_client(await absorb.start())
    with pytest.raises(AbsorbAuthError) as e:
        await client.get_course_enrollment("00000000-0000-0000-0000-000000000001")
    await absorb.stop()
    message = str(e.value)
    assert message.startswith(
        "GET /enrollments/00000000-0000-0000-0000-000000000001 -> HTTP 401: unauthorized"
    )
    assert len(absorb.tokens) == 2  # the stale token made it log in once more, not again
    assert "Denied: None *** Bearer ***" in message  # masked, not dropped
    assert not [s for s in (API_KEY, *absorb.tokens) if s in message]


async def test_wrong_api_key_is_refused(simulator: SimHandle, make_client: MakeClient) -> None:
    """Absorb answers 401 to a wrong x-api-key; the client says so and does not loop."""
    client = make_client(simulator.url, api_key="00000000-0000-0000-0000-000000000000")
    with pytest.raises(AbsorbAuthError):
        await _touch(client, await _course(simulator))
    assert (await simulator.state())["requests"]["401"] == 1


async def test_429_with_retry_after_is_honoured(
    simulator: SimHandle, make_client: MakeClient
) -> None:
    """Throttled calls wait what Retry-After says, then succeed."""
    course = await _course(simulator)
    client = make_client(simulator.url)
    await _touch(client, course)
    await simulator.set_faults(rate_limit_per_s=5, rate_limit_burst=1, retry_after_s=0.3)
    with capture_logs() as logs:
        counts = await asyncio.gather(*(_touch(client, course) for _ in range(3)))
    assert len(set(counts)) == 1
    retries = [e for e in logs if e["event"] == "absorb.retry"]
    assert retries
    assert all(e["status"] == 429 and e["delay_s"] == 0.3 for e in retries)
    assert (await simulator.state())["requests"]["429"] == len(retries)


async def test_429_without_retry_after_backs_off(
    simulator: SimHandle, make_client: MakeClient
) -> None:
    """Absorb documents no Retry-After: then the client backs off exponentially and gets through."""
    course = await _course(simulator)
    client = make_client(
        simulator.url, retry=RetryPolicy(max_attempts=20, backoff_base_s=0.05, backoff_cap_s=0.2)
    )
    await _touch(client, course)
    await simulator.set_faults(rate_limit_per_s=10, rate_limit_burst=1, retry_after_s=None)
    results = await asyncio.gather(*(_touch(client, course) for _ in range(6)))
    assert len(set(results)) == 1
    assert (await simulator.state())["requests"]["429"] > 0


async def test_server_errors_are_retried(simulator: SimHandle, make_client: MakeClient) -> None:
    """With a third of replies failing with 500/503, every read still succeeds."""
    course = await _course(simulator)
    client = make_client(
        simulator.url, retry=RetryPolicy(max_attempts=12, backoff_base_s=0.001, backoff_cap_s=0.01)
    )
    expected = await _touch(client, course)
    await simulator.set_faults(error_rate=0.33)
    for _ in range(20):
        assert await _touch(client, course) == expected
    requests = (await simulator.state())["requests"]
    assert requests.get("500", 0) + requests.get("503", 0) > 0


async def test_writes_are_not_repeated_after_a_500(
    simulator: SimHandle, make_client: MakeClient
) -> None:
    """A 500 on a write may mean it happened, so the client reports it instead of repeating it."""
    tenant = await simulator.control("GET", "tenant")
    client = make_client(simulator.url)
    await _touch(client, await _course(simulator))
    await simulator.set_faults(error_rate=1.0, error_statuses=[500])
    before = (await simulator.state())["requests"]["total"]
    with pytest.raises(AbsorbUnavailableError) as e:
        await client.create_enrollment(tenant["users"][5], tenant["courses"][0]["id"])
    assert e.value.status == 500
    assert "may have happened" in str(e.value)
    assert (await simulator.state())["requests"]["total"] - before == 1


async def test_writes_are_repeated_after_a_503(
    simulator: SimHandle, make_client: MakeClient
) -> None:
    """A 503 means Absorb did not act, so a write goes again and gets through."""
    tenant = await simulator.control("GET", "tenant")
    client = make_client(simulator.url, retry=RetryPolicy(max_attempts=20, backoff_base_s=0.001))
    await _touch(client, await _course(simulator))
    await simulator.set_faults(error_rate=0.5, error_statuses=[503])
    for user in tenant["users"][:8]:
        created = await client.create_enrollment(user, tenant["courses"][1]["id"])
        assert created.user_id == user
    assert (await simulator.state())["requests"]["503"] > 0


async def test_malformed_json_gives_a_clear_error(
    simulator: SimHandle, make_client: MakeClient
) -> None:
    """A body that is not JSON ends in an error naming the endpoint, with a masked excerpt."""
    course = await _course(simulator)
    client = make_client(simulator.url)
    await _touch(client, course)
    await simulator.set_faults(malformed_rate=1.0)
    with pytest.raises(AbsorbResponseError) as e:
        await _touch(client, course)
    message = str(e.value)
    assert f"GET /courses/{course}/enrollments" in message
    assert "not valid JSON" in message
    for secret in (API_KEY, PASSWORD):
        assert secret not in message


async def test_occasional_malformed_replies_are_read_again(
    simulator: SimHandle, make_client: MakeClient
) -> None:
    """A cut-off reply to a read is asked for again, so a flaky network costs nothing."""
    course = await _course(simulator)
    client = make_client(
        simulator.url, retry=RetryPolicy(max_attempts=15, backoff_base_s=0.001, backoff_cap_s=0.01)
    )
    expected = await _touch(client, course)
    await simulator.set_faults(malformed_rate=0.3)
    for _ in range(10):
        assert await _touch(client, course) == expected


async def test_a_timeout_is_retried_then_reported(
    simulator: SimHandle, make_client: MakeClient
) -> None:
    """A reply slower than the timeout is tried `max_attempts` times, then reported as such."""
    course = await _course(simulator)
    client = make_client(
        simulator.url,
        timeout_s=0.2,
        retry=RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_cap_s=0.01),
    )
    await _touch(client, course)
    before = (await simulator.state())["requests"]["total"]
    await simulator.set_faults(latency_ms=600)
    with pytest.raises(
        AbsorbUnavailableError, match=r"gave up after 3 tries; last: no reply within 0\.2s"
    ):
        await _touch(client, course)
    await simulator.set_faults(latency_ms=0)
    assert (await simulator.state())["requests"]["total"] - before == 3


async def test_a_refused_connection_is_retried_then_reported(make_client: MakeClient) -> None:
    """Nobody listening: the client tries, backs off, and names the endpoint when it gives up."""
    client = make_client(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(
        AbsorbUnavailableError,
        match=r"POST /authenticate: gave up after 5 tries; last: cannot connect",
    ):
        await client.get_course_enrollment("00000000-0000-0000-0000-000000000001")


async def test_client_side_rate_limit_is_shared(
    simulator: SimHandle, make_client: MakeClient
) -> None:
    """One client's callers together stay under its requests-per-second budget."""
    course = await _course(simulator)
    client = make_client(simulator.url, max_requests_per_second=20)
    await _touch(client, course)
    # The bucket holds a burst of 20; 40 more calls need at least ~1 s of refill.
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(
        *(client.get_course_enrollment(_any_enrollment(simulator)) for _ in range(40))
    )
    assert loop.time() - started >= 0.9


def _any_enrollment(sim: SimHandle) -> str:
    return next(iter(sim.sim.tenant.enrollments))


@pytest.mark.parametrize("region", ["us", "ca", "eu", "au", "sandbox-us", "sandbox-eu"])
def test_regions_by_short_name(region: str) -> None:
    """Absorb's regional hosts are accepted by short name."""
    from bridge.absorb.paths import REGIONS, resolve_base_url

    assert resolve_base_url(region) == REGIONS[region]
    assert resolve_base_url(region).startswith("https://rest.")


def test_bad_base_url_is_named() -> None:
    """A base URL that is neither a URL nor a region says what it accepts."""
    from bridge.absorb.paths import resolve_base_url

    with pytest.raises(ValueError, match="neither a URL nor a region"):
        resolve_base_url("mars")


async def test_a_malformed_record_is_reported_with_secrets_masked(
    client: AbsorbClient, simulator: SimHandle
) -> None:
    """A record that fails validation names the endpoint and field; secrets in it are masked."""
    ce = next(iter(simulator.sim.tenant.enrollments.values()))
    raw = {"id": f"{ce.id} {API_KEY}", "status": f"banana {PASSWORD}"}
    await simulator.control("PATCH", f"records/{ce.id}", {"raw": raw})
    with pytest.raises(AbsorbResponseError) as e:
        await client.get_course_enrollment(ce.id)
    message = str(e.value)
    assert message.startswith(f"GET /enrollments/{ce.id}: unexpected reply (status:")
    assert "banana" in message
    assert API_KEY not in message
    assert PASSWORD not in message
    assert "***" in message
