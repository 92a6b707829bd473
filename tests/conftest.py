"""Shared fixtures: a real Redis server, the simulator over real HTTP, and clients of it."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from bridge.absorb.client import AbsorbClient
from bridge.absorb.token_cache import TokenCache
from bridge.absorb.transport import AbsorbTransport, Credentials, RetryPolicy
from bridge.ratelimit import Limiter
from bridge.simulator.faults import Faults
from bridge.simulator.generate import TenantSpec
from bridge.simulator.server import Simulator, SimulatorConfig

pytest_plugins = ["tests.fixtures_brokers", "tests.fixtures_aws", "tests.fixtures_lrs"]

API_KEY = "5e0f6a4c-77d3-4c51-9d2b-0d8d4f1b9a11"
USERNAME = "integration-admin"
PASSWORD = "s3cret-Pa55word!"
FAST_RETRY = RetryPolicy(max_attempts=5, backoff_base_s=0.01, backoff_cap_s=0.05)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def daemon_config(
    path: Path,
    *,
    sim_url: str,
    redis_url: str,
    prefix: str,
    interval_s: float,
    sinks: str,
    routes: str,
    api_key: str = "K",
    max_requests_per_second: float = 100,
    webhooks: str = "",
) -> Path:
    """Write the config a real `run` process gets in the end-to-end tests: the simulator as
    Absorb (user U, password W), one every-course feed whose `interval` is also its
    `max_interval`, and the given `sinks:` and `routes:` entries (YAML list items)."""
    path.write_text(
        f"""
absorb:
  base_url: {sim_url}
  api_key: {api_key}
  username: U
  password: W
  max_requests_per_second: {max_requests_per_second:g}
{webhooks}redis:
  url: {redis_url}
  prefix: {prefix}
http:
  listen: 127.0.0.1:0
feeds:
  - name: courses
    resource: course_enrollments
    interval: {interval_s:g}s
    max_interval: {interval_s:g}s
    lookback: 5s
sinks:
{sinks}routes:
{routes}"""
    )
    return path


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis server: the one the test command started, or one started here."""
    given = os.environ.get("ABSORB_BRIDGE_TEST_REDIS_URL")
    if given:
        yield given
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed; run the README's test command, which installs it"
        )
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the real Redis server, on an emptied database."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@dataclass
class SimHandle:
    """A running simulator: its URL, the object itself, and its control API over HTTP."""

    url: str
    sim: Simulator
    http: aiohttp.ClientSession

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call the `/_sim/` control API and return its JSON reply."""
        async with self.http.request(method, f"{self.url}/_sim/{path}", json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def set_faults(self, **faults: Any) -> None:
        """Switch faults on or off while the simulator runs."""
        await self.control("PUT", "faults", faults)

    async def state(self) -> dict[str, Any]:
        """The simulator's counters."""
        result: dict[str, Any] = await self.control("GET", "state")
        return result


StartSimulator = Callable[..., Awaitable[SimHandle]]


@pytest.fixture
async def start_simulator() -> AsyncIterator[StartSimulator]:
    """Start simulators on free loopback ports; each stops when the test ends."""
    runners: list[web.AppRunner] = []
    http = aiohttp.ClientSession()

    async def start(
        *, faults: Faults | None = None, activity_per_second: float = 0.0, **tenant: Any
    ) -> SimHandle:
        spec = TenantSpec(**{"users": 40, "courses": 6, "seed": 7, **tenant})
        sim = Simulator(
            SimulatorConfig(
                api_key=API_KEY,
                username=USERNAME,
                password=PASSWORD,
                tenant=spec,
                activity_per_second=activity_per_second,
                # Tests are not about Absorb's throttle unless they say so.
                faults=faults or Faults(rate_limit_per_s=None),
            )
        )
        runner = web.AppRunner(sim.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return SimHandle(f"http://127.0.0.1:{port}", sim, http)

    yield start
    for runner in runners:
        await runner.cleanup()
    await http.close()


@pytest.fixture
async def simulator(start_simulator: StartSimulator) -> SimHandle:
    """One simulator with a small tenant and no faults."""
    return await start_simulator()


MakeClient = Callable[..., AbsorbClient]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """Build Absorb clients (closed when the test ends) with quick retries."""
    clients: list[AbsorbClient] = []

    def make(
        url: str,
        *,
        token_cache: TokenCache | None = None,
        api_key: str = API_KEY,
        password: str = PASSWORD,
        page_size: int = 50,
        timeout_s: float = 5.0,
        retry: RetryPolicy = FAST_RETRY,
        max_requests_per_second: float = 1000.0,
        limiter: Limiter | None = None,
    ) -> AbsorbClient:
        transport = AbsorbTransport(
            url,
            Credentials(api_key=api_key, username=USERNAME, password=password),
            token_cache=token_cache,
            timeout_s=timeout_s,
            retry=retry,
            max_requests_per_second=max_requests_per_second,
            limiter=limiter,
        )
        client = AbsorbClient(transport, page_size=page_size)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(simulator: SimHandle, make_client: MakeClient) -> AbsorbClient:
    """A client of the default simulator."""
    return make_client(simulator.url)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30) -> None:
    """Poll `check` until it holds; fail naming `what` if it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
