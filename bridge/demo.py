"""`absorb-bridge demo`: the whole pipeline on a simulated tenant, with nothing to install.

An in-process Absorb simulator with live learner activity, the real sweeps,
snapshots, outbox and delivery, and an in-process Redis-compatible store
(fakeredis) standing in for Redis; events are printed as readable lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
from collections import Counter
from typing import Any, TextIO

from aiohttp import web
from fakeredis import FakeAsyncRedis

from bridge import health
from bridge.absorb.client import AbsorbClient
from bridge.absorb.transport import AbsorbTransport, Credentials
from bridge.commands.wiring import Parts, feed_spec, routes
from bridge.config import Config
from bridge.console import Console, Local, console_app
from bridge.service import Bridge, Timing
from bridge.simulator.generate import TenantSpec
from bridge.simulator.server import Simulator, SimulatorConfig
from bridge.sinks.base import Delivery
from bridge.sinks.stdout import describe
from bridge.store import Store

_CREDENTIALS = Credentials(api_key="demo-key", username="demo-admin", password="demo-password")
_SUMMARY_EVERY_S = 10.0
_COLOURS = {"Complete": "\033[32m", "Failed": "\033[31m", "InProgress": "\033[33m"}


class _Terminal:
    """A sink that prints each event as a readable line and counts them."""

    name = "terminal"

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
    terminal = _Terminal(out, colour=out.isatty())
    token = "demo-" + secrets.token_urlsafe(12)
    config = _config(url, token)
    store = Store(redis, config.redis.prefix, keep_recent=config.redis.recent_events)
    bridge = Bridge(
        client=client,
        store=store,
        feeds=[feed_spec(f) for f in config.feeds],
        sinks=[terminal],
        routes=routes(config),
        source=url,
        timing=Timing(idle_s=0.5, grace_s=3.0),
        check_redis_settings=False,  # the in-process stand-in has neither CONFIG nor a disk
    )
    local = Local(
        readiness=bridge.readiness,
        liveness=bridge.liveness,
        loops=lambda: bridge.loops.loops,
        circuits=lambda: {w.sink.name: w.circuit for w in bridge.workers},
    )
    operators = console_app(Console(config, Parts(redis, client, store), local))
    server, port = await health.serve(
        bridge.readiness, "127.0.0.1", 0, liveness=bridge.liveness, console=operators
    )
    print(
        f"absorb-bridge demo: a simulated Absorb tenant at {url} with {len(sim.tenant.users)} "
        f"learners, {len(sim.tenant.courses)} courses and live activity.\n"
        "The real pipeline runs against it: sweeps by dateEdited, snapshots, the outbox and "
        "delivery.\nState is kept in an in-process Redis stand-in (fakeredis), for this demo "
        "only: `absorb-bridge run` needs a real Redis.\nThe first sweep records a baseline "
        "silently; every change after it is printed. Ctrl-C stops.\n"
        f"The operator's console: http://127.0.0.1:{port}/console/ (token: {token}).\n",
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
                print(f"-- so far: {terminal.summary()}", file=out, flush=True)
    finally:
        await bridge.stop()
        await server.cleanup()
        await client.close()
        await runner.cleanup()
        await redis.aclose()
    print(f"\nstopped: {terminal.summary()}.", file=out, flush=True)
    return 0


def _config(url: str, token: str) -> Config:
    """The demo's settings as a config file would give them: what the console reads."""
    return Config.model_validate(
        {
            "absorb": {
                "base_url": url,
                "api_key": _CREDENTIALS.api_key,
                "username": _CREDENTIALS.username,
                "password": _CREDENTIALS.password,
            },
            "redis": {"prefix": "demo"},
            "feeds": [
                {
                    "name": "courses",
                    "resource": "course_enrollments",
                    "interval": "1s",
                    "lookback": "5s",
                    "details": ["lessons", "attempts"],
                }
            ],
            # The terminal the events print on, in the place of a configured sink.
            "sinks": [{"name": "terminal", "type": "stdout", "format": "pretty"}],
            "routes": [{"sinks": ["terminal"]}],
            "console": {"enabled": True, "token": token},
        }
    )
