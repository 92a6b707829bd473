"""`absorb-bridge run`: the daemon, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import math
import os
import signal

import structlog

from bridge import health
from bridge.commands.wiring import (
    build_sink,
    connect,
    delivery_options,
    feed_spec,
    load,
    routes,
)
from bridge.config import Config
from bridge.service import Bridge, Timing
from bridge.sinks.base import Sink

log = structlog.get_logger(__name__)


def run(path_arg: str | None) -> int:
    """Load the config and run the bridge; 0 after a clean stop, 1 for a bad config."""
    config = load("run", path_arg)
    if isinstance(config, int):
        return config
    sinks = [build_sink(s, config) for s in config.sinks]
    asyncio.run(_run(config, sinks))
    return 0


async def _run(config: Config, sinks: list[Sink]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("bridge.stopping_now", reason="second signal")
            os._exit(1)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    async with connect(config) as parts:
        bridge = Bridge(
            client=parts.client,
            store=parts.store,
            feeds=[feed_spec(f) for f in config.feeds],
            sinks=sinks,
            routes=routes(config),
            source=config.absorb.base_url,
            page_size=config.absorb.page_size,
            delivery=delivery_options(config),
            timing=_timing(config.absorb.max_requests_per_second),
        )
        server, port = await health.serve(
            bridge.readiness, config.http.host, config.http.port, liveness=bridge.liveness
        )
        log.info(
            "bridge.starting",
            feeds=len(config.feeds),
            sinks=len(sinks),
            http=f"http://{config.http.host}:{port}",
        )
        await bridge.start()
        await stop.wait()
        log.info("bridge.stopping")
        await bridge.stop()
        await server.cleanup()
        log.info("bridge.stopped")


def _timing(requests_per_s: float) -> Timing:
    """Enough sweep slots to spend the budget: a slot sends about 4 requests a second."""
    return Timing(requests_per_s=requests_per_s, concurrency=max(4, math.ceil(requests_per_s / 4)))
