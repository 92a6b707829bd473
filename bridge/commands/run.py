"""`absorb-bridge run`: the daemon, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
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
from bridge.notices import NoticeListener
from bridge.notices.counts import NoticeCounts
from bridge.service import Bridge
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
        hooks = config.absorb.webhooks
        notices = (
            None
            if hooks is None
            else NoticeListener(
                secret=hooks.secret.get_secret_value(),
                path=hooks.path,
                counts=NoticeCounts(parts.redis, config.redis.prefix),
            )
        )
        bridge = Bridge(
            client=parts.client,
            store=parts.store,
            feeds=[feed_spec(f) for f in config.feeds],
            sinks=sinks,
            routes=routes(config),
            source=config.absorb.base_url,
            page_size=config.absorb.page_size,
            delivery=delivery_options(config),
            notices=notices,
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
        if notices is not None and hooks is not None:
            await notices.start(hooks.host, hooks.port)
        await bridge.start()
        await stop.wait()
        log.info("bridge.stopping")
        if notices is not None:
            await notices.stop()
        await bridge.stop()
        await server.cleanup()
        log.info("bridge.stopped")
