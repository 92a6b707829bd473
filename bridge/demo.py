"""`absorb-bridge demo`: the whole pipeline on a simulated tenant, with nothing to install.

An in-process Absorb simulator with live learner activity, the real sweeps,
snapshots, outbox and delivery, and an in-process Redis-compatible store
(fakeredis) standing in for Redis; events are printed as readable lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections import Counter
from typing import Any, TextIO

from aiohttp import web
from fakeredis import FakeAsyncRedis

from bridge.absorb.client import AbsorbClient
from bridge.absorb.transport import AbsorbTransport, Credentials
from bridge.feeds import FeedSpec
from bridge.routes import Route
from bridge.service import Bridge, Timing
from bridge.simulator.generate import TenantSpec
from bridge.simulator.server import Simulator, SimulatorConfig
from bridge.sinks.base import Delivery
from bridge.sinks.stdout import describe
from bridge.store import Store

_CREDENTIALS = Credentials(api_key="demo-key", username="demo-admin", password="demo-password")
_SUMMARY_EVERY_S = 10.0
_COLOURS = {"Complete": "\033[32m", "Failed": "\033[31m", "InProgress": "\033[33m"}


class _Console:
    """A sink that prints each event as a readable line and counts them."""

    name = "console"

    def __init__(self, out: TextIO, colour: bool) -> None:
        self.out = out
        self.colour = colour
        self.counts: Counter[str] = Counter()

    async def start(self) -> None:
        """Nothing to open."""

    async def send(self, delivery: Delivery) -> None:
        """Print the event."""
        event = delivery.event
        self.counts[event["type"].removeprefix("absorb.")] += 1
        line = describe(event)
        colour = _COLOURS.get(str(event.get("status"))) if self.colour else None
        if colour:
            line = f"{colour}{line}\033[0m"
        print(line, file=self.out, flush=True)

    async def close(self) -> None:
        """Nothing to close."""

    def summary(self) -> str:
        """Counts so far, by event type."""
        total = sum(self.counts.values())
        parts = ", ".join(f"{n} {kind}" for kind, n in self.counts.most_common())
        return f"{total} events" + (f" ({parts})" if parts else "")


async def run_demo(duration_s: float | None, out: TextIO | None = None) -> int:
    """Run the demo until `duration_s` passes or Ctrl-C; returns the exit code."""
    out = out or sys.stdout
    sim = Simulator(
        SimulatorConfig(
            api_key=_CREDENTIALS.api_key,
            username=_CREDENTIALS.username,
            password=_CREDENTIALS.password,
            tenant=TenantSpec(seed=42, users=60, courses=6),
            activity_per_second=6.0,
        )
    )
    runner = web.AppRunner(sim.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sockets: Any = getattr(site._server, "sockets", None)
    url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    redis = FakeAsyncRedis()
    client = AbsorbClient(AbsorbTransport(url, _CREDENTIALS), page_size=200)
    console = _Console(out, colour=out.isatty())
    feed = FeedSpec(
        name="courses",
        resource="course_enrollments",
        interval_s=1.0,
        lookback_s=5.0,
        details=frozenset({"lessons", "attempts"}),
    )
    bridge = Bridge(
        client=client,
        store=Store(redis, "demo"),
        feeds=[feed],
        sinks=[console],
        routes=[Route(sinks=("console",))],
        source=url,
        timing=Timing(idle_s=0.5, grace_s=3.0),
        check_redis_settings=False,  # the in-process stand-in has neither CONFIG nor a disk
    )
    print(
        f"absorb-bridge demo: a simulated Absorb tenant at {url} with {len(sim.tenant.users)} "
        f"learners, {len(sim.tenant.courses)} courses and live activity.\n"
        "The real pipeline runs against it: sweeps by dateEdited, snapshots, the outbox and "
        "delivery.\nState is kept in an in-process Redis stand-in (fakeredis), for this demo "
        "only: `absorb-bridge run` needs a real Redis.\nThe first sweep records a baseline "
        "silently; every change after it is printed. Ctrl-C stops.\n",
        file=out,
        flush=True,
    )
    await bridge.start()
    deadline = loop.time() + duration_s if duration_s else None
    try:
        while not stop.is_set() and (deadline is None or loop.time() < deadline):
            wait = (
                _SUMMARY_EVERY_S
                if deadline is None
                else min(_SUMMARY_EVERY_S, deadline - loop.time())
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, wait))
            if not stop.is_set() and (deadline is None or loop.time() < deadline):
                print(f"-- so far: {console.summary()}", file=out, flush=True)
    finally:
        await bridge.stop()
        await client.close()
        await runner.cleanup()
        await redis.aclose()
    print(f"\nstopped: {console.summary()}.", file=out, flush=True)
    return 0
