"""The operator's web console: routes, access control, and the actions it offers.

Mounted under `/console/` on the bridge's own HTTP server when `console.enabled`.
Every page and action needs the console token, as `Authorization: Bearer` or the
session cookie its login form sets; form posts also need the page's CSRF token
(a post with a Bearer token needs none: a browser never adds one by itself).
Links are relative to a `<base>` that honours `X-Forwarded-Prefix`, so the console
works behind a reverse proxy under a sub-path. The actions call what the CLI
commands call: `replay_sink`, `resync_feed`, `DeliveryQueue.enable`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlencode, urlsplit

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from bridge import clock
from bridge.commands.replay import replay_sink
from bridge.commands.report import collect
from bridge.commands.resync import resync_feed
from bridge.commands.wiring import Parts, config_secrets
from bridge.config import Config
from bridge.console import auth, views
from bridge.console.local import Local, local_health
from bridge.console.render import environment
from bridge.delivery import DeliveryQueue
from bridge.errors import BridgeError
from bridge.redaction import mask, mask_url

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: A prefix a proxy may announce: a plain URL path, nothing that could break out of an attribute.
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)*/?$")
_STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
#: How long a resync started from the console waits for a scope another replica is sweeping.
RESYNC_WAIT_S = 30.0


@dataclass
class Console:
    """What the console reads and acts on: the config, the connections, this process's loops."""

    config: Config
    parts: Parts
    local: Local | None = None
    brake: auth.Brake = field(default_factory=auth.Brake)

    @property
    def token(self) -> str:
        """The console token (the config guarantees one when the console is enabled)."""
        token = self.config.console.token
        assert token is not None, "console.enabled without a token is a config error"
        return token.get_secret_value()


def base_path(request: web.Request) -> str:
    """The console's own path as the browser sees it, proxy prefix included, ending in `/`."""
    prefix = request.headers.get("X-Forwarded-Prefix", "").strip()
    if not _PREFIX.fullmatch(prefix):
        prefix = ""
    return f"{prefix.rstrip('/')}/console/"


def console_app(console: Console) -> web.Application:
    """The console as an aiohttp application, to be added under `/console/`."""
    secrets = [*config_secrets(console.config), console.token]
    env = environment(secrets)
    app = web.Application(middlewares=[_headers(secrets), _guard(console)])

    def page(request: web.Request, name: str, status: int = 200, **data: Any) -> web.Response:
        session = request.get("session", "")
        body = env.get_template(name).render(
            base=base_path(request),
            csrf=auth.csrf_token(console.token, session) if session else "",
            signed_in=bool(request.get("who")),
            flash=_flash(console, request),
            **data,
        )
        return web.Response(status=status, text=body, content_type="text/html")

    async def login_form(request: web.Request) -> web.Response:
        return page(request, "login.html", status=401 if request.get("refused") else 200)

    async def login(request: web.Request) -> web.StreamResponse:
        client = request.remote or "unknown"
        if (wait := console.brake.wait_s(client, clock.monotonic())) > 0:
            return _slow_down(wait)
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
            secure=_secure(request),
        )
        raise response

    async def logout(request: web.Request) -> web.StreamResponse:
        response = web.HTTPSeeOther(base_path(request) + "login")
        response.del_cookie(auth.COOKIE, path=base_path(request))
        raise response

    async def overview(request: web.Request) -> web.Response:
        report = await collect(console.config, console.parts)
        health = local_health(console.local) if console.local else None
        return page(request, "overview.html", report=report, local=health)

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
        log.info("console.replay", sink=sink, moved=moved, who=request["who"])
        note = " and enabled the sink" if was_disabled else ""
        raise _done(console, request, f"dead-letters/{sink}", f"{sink}: {moved} replayed{note}")

    async def enable(request: web.Request) -> web.StreamResponse:
        sink = _sink(console, request)
        await _queue(console, sink).enable()
        log.info("console.sink_enabled", sink=sink, who=request["who"])
        raise _done(console, request, "", f"{sink}: enabled")

    async def resync(request: web.Request) -> web.StreamResponse:
        feed = _feed(console, request)
        form = await request.post()
        scope = str(form.get("scope") or "") or None
        totals = await resync_feed(
            console.config,
            console.parts,
            feed,
            wait_s=RESYNC_WAIT_S,
            scope_keys=None if scope is None else {scope},
        )
        log.info("console.resync", feed=feed, scope=scope, who=request["who"], **totals)
        text = (
            f"{feed}: {totals['scopes']}/{totals['of']} scopes swept in full, "
            f"{totals['events']} events, {totals['quarantined']} still quarantined"
        )
        raise _done(console, request, "quarantine" if scope else "", text)

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
    app["login_form"] = login_form
    return app


def _guard(console: Console) -> Any:
    """The middleware that lets through only requests carrying the token or a session."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        tail = request.match_info.route.resource
        name = tail.canonical if tail is not None else ""
        if name.startswith("/console/static/") or name == "/console/login":
            if name == "/console/login" and request.method == "POST" and not _same_origin(request):
                raise web.HTTPForbidden(text="cross-origin post refused")
            return await handler(request)
        client = request.remote or "unknown"
        bearer = auth.bearer_valid(console.token, request.headers.get("Authorization"))
        if bearer is not None:
            if (wait := console.brake.wait_s(client, clock.monotonic())) > 0:
                return _slow_down(wait)
            if not bearer:
                console.brake.failed(client, clock.monotonic())
                log.warning("console.token_refused", client=client)
                raise web.HTTPUnauthorized(
                    text="wrong console token", headers={"WWW-Authenticate": "Bearer"}
                )
            console.brake.succeeded(client)
            request["who"] = "bearer"
            return await handler(request)
        session = request.cookies.get(auth.COOKIE)
        if not auth.session_valid(console.token, session, clock.now().timestamp()):
            if request.method != "GET":
                raise web.HTTPUnauthorized(text="sign in to the console first")
            request["refused"] = True
            login_form: Handler = request.app["login_form"]
            return await login_form(request)
        assert session is not None
        request["who"] = "session"
        request["session"] = session
        if request.method == "POST":
            form = await request.post()
            if not _same_origin(request) or not auth.csrf_valid(
                console.token, session, str(form.get("csrf", ""))
            ):
                log.warning("console.csrf_refused", client=client, path=request.path)
                raise web.HTTPForbidden(text="form expired or posted from elsewhere: reload it")
        return await handler(request)

    return guard


def _headers(secrets: list[str]) -> Any:
    """The middleware that adds security headers and turns any failure into one clear answer."""

    @web.middleware
    async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as e:
            response = e
        except (RedisError, OSError, TimeoutError, BridgeError) as e:
            # A dependency that is down fails this page, never the server: one line says which.
            why = mask_url(mask(f"{type(e).__name__}: {e}", secrets))
            log.warning("console.page_failed", path=request.path, error=why)
            response = web.Response(
                status=503, text=f"the console cannot read the bridge's state: {why}\n"
            )
        except Exception:
            log.exception("console.page_error", path=request.path)
            response = web.Response(
                status=500, text="the console failed on this page; see its log\n"
            )
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
            " frame-ancestors 'none'; form-action 'self'; base-uri 'self'"
        )
        if isinstance(response, web.HTTPException) and response.status >= 300:
            raise response
        return response

    return headers


def _same_origin(request: web.Request) -> bool:
    """A browser's post names where its page came from; it must be this host."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("X-Forwarded-Host") or request.host
    return urlsplit(origin).netloc == host


def _secure(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _slow_down(wait_s: float) -> web.Response:
    retry = str(max(1, math.ceil(wait_s)))
    return web.Response(
        status=429,
        text=f"too many wrong tokens: try again in {retry}s\n",
        headers={"Retry-After": retry},
    )


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
