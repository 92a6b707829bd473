"""Helpers for the notice tests: a bridge that counts its sweeps, with a listener beside it."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bridge.absorb.client import AbsorbClient
from bridge.feeds import FeedSpec, Scope
from bridge.notices import NoticeListener, sign
from bridge.notices.counts import NoticeCounts, read_counts
from bridge.service import Bridge, Timing
from bridge.store import Store
from bridge.sweep import SweepResult
from tests.conftest import SimHandle

SECRET = "absorb-webhook-Secret-Key-1"
#: Long enough that only a notice (or a forced round) sweeps a scope during a test.
QUIET = FeedSpec(
    name="courses", resource="course_enrollments", interval_s=3600, max_interval_s=3600
)
TIMING = Timing(lease_ttl_s=5, idle_s=0.05, grace_s=2, stats_interval_s=0.5, trim_interval_s=1)


class CountingBridge(Bridge):
    """A bridge that counts each scope's sweeps (the test's window on the scheduler)."""

    swept: Counter[str]

    async def sweep_scope(
        self, scope: Scope, *, full: bool = False, anyway: bool = True
    ) -> SweepResult | None:
        """Count the sweep, then sweep as the bridge does."""
        self.swept[scope.key] += 1
        return await super().sweep_scope(scope, full=full, anyway=anyway)


@dataclass
class Hooked:
    """A baselined bridge, its notice listener (listening) and the simulator it sweeps."""

    sim: SimHandle
    bridge: CountingBridge
    listener: NoticeListener
    url: str
    http: aiohttp.ClientSession
    read_upto: str = "-"

    async def post(self, body: bytes, signature: str | None = "sign") -> int:
        """POST a raw body to the listener (signed correctly unless a signature is given)."""
        headers = {"Content-Type": "application/json"}
        if signature == "sign":
            headers["absorb-signature"] = sign(body, SECRET)
        elif signature is not None:
            headers["absorb-signature"] = signature
        async with self.http.post(self.url, data=body, headers=headers) as resp:
            return resp.status

    async def notice(self, body: Any) -> int:
        """POST a JSON notice, signed."""
        return await self.post(json.dumps(body).encode())

    async def counts(self) -> dict[str, Any]:
        """The notice counts as `status` shows them."""
        await self.listener.counts.flush()
        store = self.bridge.store
        return await read_counts(store.redis, store.prefix)

    async def new_events(self) -> list[dict[str, Any]]:
        """Events appended to the outbox since the last call."""
        fresh = []
        while batch := await self.bridge.store.read_outbox(
            count=1000, after="-" if self.read_upto == "-" else f"({self.read_upto}"
        ):
            for entry_id, fields in batch:
                fresh.append(json.loads(fields["event"]))
                self.read_upto = entry_id
        return fresh

    def course_of(self, enrollment_id: str) -> str:
        """The course of a simulated enrollment."""
        return self.sim.sim.tenant.enrollments[enrollment_id].course.id

    def pick(self, status_not: int | None = None) -> str:
        """An active course enrollment of the simulator (optionally not in a status)."""
        for rid, ce in self.sim.sim.tenant.enrollments.items():
            if ce.is_active and ce.status != status_not:
                return rid
        raise AssertionError("no enrollment to pick")


async def hooked_bridge(
    sim: SimHandle,
    client: AbsorbClient,
    redis: aioredis.Redis,
    http: aiohttp.ClientSession,
    *,
    feed: FeedSpec = QUIET,
    prefix: str | None = None,
) -> Hooked:
    """A bridge over every course of `sim`, baselined, with a listener on a free port."""
    store = Store(redis, prefix or f"notices-{secrets.token_hex(4)}")
    listener = NoticeListener(
        secret=SECRET, path="/absorb/webhooks", counts=NoticeCounts(redis, store.prefix)
    )
    bridge = CountingBridge(
        client=client,
        store=store,
        feeds=[feed],
        sinks=[],
        routes=[],
        source=sim.url,
        timing=TIMING,
        notices=listener,
        check_redis_settings=False,
    )
    bridge.swept = Counter()
    await bridge.sweep_once(force=True)
    bridge.swept.clear()
    port = await listener.start("127.0.0.1", 0)
    hooked = Hooked(sim, bridge, listener, f"http://127.0.0.1:{port}/absorb/webhooks", http)
    await hooked.new_events()
    return hooked
