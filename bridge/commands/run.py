"""`absorb-bridge run`: the daemon, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal

import structlog

from bridge.commands.wiring import build_sink, connect, feed_spec, load, routes
from bridge.config import Config, ConfigError
from bridge.service import Bridge
from bridge.sinks.base import Sink

log = structlog.get_logger(__name__)


def run(path_arg: str | None) -> int:
    """Load the config and run the bridge; 0 after a clean stop, 1 for a bad config."""
    config = load("run", path_arg)
    if isinstance(config, int):
        return config
    try:
        sinks = [build_sink(s) for s in config.sinks]
    except ConfigError as e:
        print(f"absorb-bridge run: {e}")
        return 1
    asyncio.run(_run(config, sinks))
    return 0


async def _run(config: Config, sinks: list[Sink]) -> None:
    async with connect(config) as parts:
        bridge = Bridge(
            client=parts.client,
            store=parts.store,
            feeds=[feed_spec(f) for f in config.feeds],
            sinks=sinks,
            routes=routes(config),
            source=config.absorb.base_url,
            page_size=config.absorb.page_size,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, bridge.request_stop)
        log.info("bridge.starting", feeds=len(config.feeds), sinks=len(sinks))
        await bridge.start()
        await bridge.wait()
        log.info("bridge.stopping")
        await bridge.stop()
        log.info("bridge.stopped")
