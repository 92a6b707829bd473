"""The operator's web console: its pages and the actions it offers.

Mounted under `/console/` on the bridge's own HTTP server when `console.enabled`;
who may reach it is `access`'s business. The actions call what the CLI commands
call: `replay_sink`, `resync_feed`, `DeliveryQueue.enable`.
"""

from __future__ import annotations

from functools import partial
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import structlog
from aiohttp import web

from bridge import clock
from bridge.commands.replay import replay_sink
from bridge.commands.report import collect
from bridge.commands.resync import resync_feed
from bridge.commands.wiring import config_secrets
from bridge.console import auth, views
from bridge.console.access import (
    LOGIN_FORM,
    REFUSED,
    SESSION,
    WHO,
    Console,
    base_path,
    guard,
    headers,
    secure,
    slow_down,
)
from bridge.console.local import local_health
from bridge.console.render import environment
from bridge.console.resyncs import summary
from bridge.delivery import DeliveryQueue

log = structlog.get_logger(__name__)

_STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
#: How long a resync started from the console waits for a scope another replica is sweeping.
RESYNC_WAIT_S = 30.0


def console_app(console: Console) -> web.Application:
    """The console as an aiohttp application, to be added under `/console/`."""
    secrets = [*config_secrets(console.config), console.token]
    env = environment(secrets)
    app = web.Application(middlewares=[headers(secrets), guard(console)])

    def page(request: web.Request, name: str, status: int = 200, **data: Any) -> web.Response:
        session = request.get(SESSION, "")
        body = env.get_template(name).render(
            base=base_path(request),
            csrf=auth.csrf_token(console.token, session) if session else "",
            signed_in=bool(request.get(WHO)),
            flash=_flash(console, request),
            **data,
        )
        return web.Response(status=status, text=body, content_type="text/html")

    async def login_form(request: web.Request) -> web.Response:
        return page(request, "login.html", status=401 if request.get(REFUSED) else 200)

    async def login(request: web.Request) -> web.StreamResponse:
        client = request.remote or "unknown"
        if (wait := console.brake.wait_s(client, clock.monotonic())) > 0:
            return slow_down(wait)
        form = await request.post()
        if not auth.token_valid(console.token, str(form.get("token", ""))):
            console.brake.failed(client, clock.monotonic())
            log.warning("console.login_refused", client=client)
            return page(request, "login.html", status=401, refused=True)
        console.brake.succeeded(client)
        log.info("console.login", client=client)
        response = web.HTTPSeeOther(base_path(request))
        response.set_cookie(
            auth.COOKIE,
            auth.session_cookie(console.token, clock.now().timestamp()),
            path=base_path(request),
            max_age=auth.SESSION_S,
            httponly=True,
            samesite="Strict",
            secure=secure(request),
        )
        raise response

    async def logout(request: web.Request) -> web.StreamResponse:
        response = web.HTTPSeeOther(base_path(request) + "login")
        response.del_cookie(auth.COOKIE, path=base_path(request))
        raise response

    async def overview(request: web.Request) -> web.Response:
        report = await collect(console.config, console.parts)
        health = local_health(console.local) if console.local else None
        return page(
            request, "overview.html", report=report, local=health, resyncs=console.resyncs.last
        )

    async def events(request: web.Request) -> web.Response:
        q = request.query
        wanted = views.EventFilter(
            type=q.get("type", ""),
            status=q.get("status", ""),
            course=q.get("course", ""),
            subject=q.get("subject", ""),
        )
        rows, read = await views.recent_events(
            console.parts.redis, console.parts.store.prefix, wanted
        )
        return page(request, "events.html", rows=rows, read=read, wanted=wanted)

    async def event(request: web.Request) -> web.Response:
        found = await views.outbox_event(
            console.parts.redis, console.parts.store.prefix, request.match_info["entry"]
        )
        if found is None:
            return page(request, "missing.html", status=404, what="event (trimmed from the outbox)")
        return page(request, "event.html", event=found)

    async def dead_letters(request: web.Request) -> web.Response:
        sink = _sink(console, request)
        rows = await views.dead_letter_rows(_queue(console, sink), limit=200)
        disabled = await _queue(console, sink).disabled()
        return page(request, "dead_letters.html", sink=sink, rows=rows, disabled=disabled)

    async def dead_letter(request: web.Request) -> web.Response:
        sink = _sink(console, request)
        found = await views.dead_letter(_queue(console, sink), request.match_info["dead"])
        if found is None:
            return page(request, "missing.html", status=404, what="dead letter (replayed?)")
        return page(request, "dead_letter.html", sink=sink, letter=found)

    async def replay(request: web.Request) -> web.StreamResponse:
        sink = _sink(console, request)
        form = await request.post()
        one = str(form.get("dead_id") or "") or None
        moved, was_disabled = await replay_sink(console.parts, sink, dead_id=one)
        log.info("console.replay", sink=sink, moved=moved, who=request[WHO])
        note = " and enabled the sink" if was_disabled else ""
        raise _done(console, request, f"dead-letters/{sink}", f"{sink}: {moved} replayed{note}")

    async def enable(request: web.Request) -> web.StreamResponse:
        sink = _sink(console, request)
        await _queue(console, sink).enable()
        log.info("console.sink_enabled", sink=sink, who=request[WHO])
        raise _done(console, request, "", f"{sink}: enabled")

    async def resync(request: web.Request) -> web.StreamResponse:
        feed = _feed(console, request)
        form = await request.post()
        scope = str(form.get("scope") or "") or None
        if scope is not None:
            # One scope (a quarantined record's Retry) is quick: answered once it is swept.
            totals = await resync_feed(
                console.config, console.parts, feed, wait_s=RESYNC_WAIT_S, scope_keys={scope}
            )
            log.info("console.resync", feed=feed, scope=scope, who=request[WHO], **totals)
            raise _done(console, request, "quarantine", f"{feed}: {summary(totals)}")
        started = console.resyncs.start(
            feed,
            partial(resync_feed, console.config, console.parts, feed, wait_s=RESYNC_WAIT_S),
            who=request[WHO],
        )
        text = "resync started: the overview shows it running, then its outcome"
        raise _done(console, request, "", f"{feed}: {text if started else 'a resync is running'}")

    async def quarantine(request: web.Request) -> web.Response:
        feeds = [
            (f.name, await views.quarantine_rows(console.parts.store, f.name))
            for f in console.config.feeds
        ]
        return page(request, "quarantine.html", feeds=feeds)

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        body = resources.files("bridge.console").joinpath("static", name).read_bytes()
        return web.Response(
            body=body, content_type=_STATIC[name], headers={"Cache-Control": "max-age=300"}
        )

    app.router.add_get("/", overview)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/events", events)
    app.router.add_get("/events/{entry}", event)
    app.router.add_get("/dead-letters/{sink}", dead_letters)
    app.router.add_get("/dead-letters/{sink}/{dead}", dead_letter)
    app.router.add_post("/sinks/{sink}/replay", replay)
    app.router.add_post("/sinks/{sink}/enable", enable)
    app.router.add_post("/feeds/{feed}/resync", resync)
    app.router.add_get("/quarantine", quarantine)
    app.router.add_get("/static/{name}", static)
    app[LOGIN_FORM] = login_form

    async def stop_resyncs(_app: web.Application) -> None:
        await console.resyncs.stop()

    app.on_cleanup.append(stop_resyncs)
    return app


def _sink(console: Console, request: web.Request) -> str:
    name = request.match_info["sink"]
    if name not in {s.name for s in console.config.sinks}:
        raise web.HTTPNotFound(text=f"no sink '{name}' in the config")
    return name


def _feed(console: Console, request: web.Request) -> str:
    name = request.match_info["feed"]
    if name not in {f.name for f in console.config.feeds}:
        raise web.HTTPNotFound(text=f"no feed '{name}' in the config")
    return name


def _queue(console: Console, sink: str) -> DeliveryQueue:
    return DeliveryQueue(console.parts.redis, console.parts.store.prefix, sink)


def _done(console: Console, request: web.Request, page: str, message: str) -> web.HTTPSeeOther:
    """After an action, back to a page that says what it did (a signed note, never echoed)."""
    sig = auth.csrf_token(console.token, f"flash:{message}")
    query = urlencode({"done": message, "sig": sig})
    return web.HTTPSeeOther(f"{base_path(request)}{page}?{query}")


def _flash(console: Console, request: web.Request) -> str | None:
    message, sig = request.query.get("done"), request.query.get("sig")
    if message and sig and auth.csrf_valid(console.token, f"flash:{message}", sig):
        return message
    return None
