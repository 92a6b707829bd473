"""`absorb-bridge run`: the daemon, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import errno
import math
import os
import signal
import sys
from collections.abc import Callable, Mapping

import structlog
from aiohttp import web
from pydantic import ValidationError

from bridge import health
from bridge.commands.wiring import (
    Parts,
    build_sink,
    connect,
    delivery_options,
    feed_spec,
    load,
    routes,
)
from bridge.config import Config, HttpServerConfig
from bridge.console import Console, Local, console_app
from bridge.notices import NoticeListener
from bridge.notices.counts import NoticeCounts
from bridge.service import Bridge, Timing
from bridge.sinks.base import Sink

log = structlog.get_logger(__name__)

#: Overrides `http.listen`: how replicas on one host sharing one config get an address each.
LISTEN_ENV = "ABSORB_BRIDGE_HTTP_LISTEN"


def run(path_arg: str | None, env: Mapping[str, str] | None = None) -> int:
    """Load the config and run the bridge; 0 after a clean stop, 1 for a bad config."""
    config = load("run", path_arg)
    if isinstance(config, int):
        return config
    env = os.environ if env is None else env
    listen = env.get(LISTEN_ENV)
    if listen:
        try:
            config.http = HttpServerConfig(listen=listen)
        except ValidationError as e:
            print(f"absorb-bridge run: {LISTEN_ENV}: {e.errors()[0]['msg']}", file=sys.stderr)
            return 1
    sinks = [build_sink(s, config) for s in config.sinks]
    asyncio.run(_run(config, sinks, explicit=bool(listen)))
    return 0


async def _run(config: Config, sinks: list[Sink], *, explicit: bool) -> None:
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
            timing=_timing(config.absorb.max_requests_per_second),
            notices=notices,
        )
        server, port = await _serve_health(
            bridge, config, explicit=explicit, console=lambda: _console(bridge, config, parts)
        )
        log.info(
            "bridge.starting",
            feeds=len(config.feeds),
            sinks=len(sinks),
            http=f"http://{config.http.host}:{port}",
            console=f"http://{config.http.host}:{port}/console/"
            if config.console.enabled
            else None,
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


def _console(bridge: Bridge, config: Config, parts: Parts) -> web.Application | None:
    """The operator's console over this daemon's connections, when the config enables it."""
    if not config.console.enabled:
        return None
    local = Local(
        readiness=bridge.readiness,
        liveness=bridge.liveness,
        loops=lambda: bridge.loops.loops,
        circuits=lambda: {w.sink.name: w.circuit for w in bridge.workers},
    )
    return console_app(Console(config, parts, local))


async def _serve_health(
    bridge: Bridge,
    config: Config,
    *,
    explicit: bool,
    console: Callable[[], web.Application | None] = lambda: None,
) -> tuple[web.AppRunner, int]:
    """The health server on `http.listen`; on a free port when the configured one is taken.

    A second replica on one host from one config finds the port taken: it serves on a
    free port and says which, rather than dying. An address given explicitly (the
    environment override, or port 0) is used as given: in use there, it fails.
    """
    host, port = config.http.host, config.http.port
    try:
        return await health.serve(
            bridge.readiness, host, port, liveness=bridge.liveness, console=console()
        )
    except OSError as e:
        if e.errno != errno.EADDRINUSE or port == 0 or explicit:
            raise
    server, bound = await health.serve(
        bridge.readiness, host, 0, liveness=bridge.liveness, console=console()
    )
    log.warning(
        "http.port_taken",
        configured=config.http.listen,
        serving=f"http://{host}:{bound}",
        hint=f"set {LISTEN_ENV}=HOST:PORT to choose each replica's address",
    )
    return server, bound


def _timing(requests_per_s: float) -> Timing:
    """Enough sweep slots to spend the budget: a slot sends about 4 requests a second."""
    return Timing(requests_per_s=requests_per_s, concurrency=max(4, math.ceil(requests_per_s / 4)))
