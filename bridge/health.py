"""The bridge's own HTTP server: `/healthz`, `/readyz` and `/metrics`."""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

from bridge import metrics

Readiness = Callable[[], tuple[bool, dict[str, str]]]


def app(
    readiness: Readiness,
    liveness: Readiness | None = None,
    *,
    console: web.Application | None = None,
) -> web.Application:
    """The aiohttp application.

    `readiness` says whether the bridge can do its work (`/readyz`); `liveness`
    whether the process should go on at all (`/healthz`: 503 asks an orchestrator
    to restart it). The console, when given, is served under `/console/`; health
    and metrics stay open as they are, for probes and scrapers.
    """

    async def healthz(_request: web.Request) -> web.Response:
        if liveness is None:
            return web.Response(text="ok\n")
        alive, checks = liveness()
        if alive:
            return web.Response(text="ok\n")
        return _report(503, {"alive": False, "checks": checks})

    async def readyz(_request: web.Request) -> web.Response:
        ready, checks = readiness()
        return _report(200 if ready else 503, {"ready": ready, "checks": checks})

    async def metrics_page(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    application = web.Application()
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/readyz", readyz)
    application.router.add_get("/metrics", metrics_page)
    if console is not None:
        # Before the console itself, which would otherwise take `/console` and answer 404.
        application.router.add_get("/console", _to_console)
        application.add_subapp("/console/", console)
    return application


async def _to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(request.path + "/")


def _report(status: int, report: dict[str, object]) -> web.Response:
    body = json.dumps(report, indent=2) + "\n"
    return web.Response(status=status, text=body, content_type="application/json")


async def serve(
    readiness: Readiness,
    host: str,
    port: int,
    *,
    liveness: Readiness | None = None,
    console: web.Application | None = None,
) -> tuple[web.AppRunner, int]:
    """Start the server (port 0: any free one); returns the runner and the port it listens on."""
    runner = web.AppRunner(app(readiness, liveness, console=console), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    # aiohttp keeps the listening server private; its sockets tell the port actually bound.
    sockets = getattr(site._server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)
