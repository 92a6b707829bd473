"""Who reaches the console: the token or a session, CSRF and `Origin` on posts, a brake on
guessing, and the headers and failure answers every page gets.

A form post needs the page's CSRF token; a post with the Bearer token needs none, as a
browser never adds that header by itself. Links are relative to the console's own path
(`base_path`), which honours a reverse proxy's `X-Forwarded-Prefix`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from bridge import clock
from bridge.commands.wiring import Parts
from bridge.config import Config
from bridge.console import auth
from bridge.console.local import Local
from bridge.console.resyncs import Resyncs
from bridge.errors import BridgeError
from bridge.redaction import mask, mask_url

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The handler that answers a request without a session with the login form.
LOGIN_FORM: web.AppKey[Handler] = web.AppKey("login_form")
#: How the request got in: "bearer" or "session" (absent: it did not).
WHO = web.RequestKey("who", str)
#: The session cookie of a request that came in with one.
SESSION = web.RequestKey("session", str)
#: Set when a page was refused for want of a session and answers with the login form.
REFUSED = web.RequestKey("refused", bool)
#: A prefix a proxy may announce: a plain URL path, nothing that could break out of an attribute.
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)*/?$")


@dataclass
class Console:
    """What the console reads and acts on: the config, the connections, this process's loops."""

    config: Config
    parts: Parts
    local: Local | None = None
    brake: auth.Brake = field(default_factory=auth.Brake)
    resyncs: Resyncs = field(default_factory=Resyncs)

    @property
    def token(self) -> str:
        """The console token (the config refuses an enabled console without one)."""
        token = self.config.console.token
        if token is None:
            raise ValueError("console.token is required when console.enabled is true")
        return token.get_secret_value()


def base_path(request: web.Request) -> str:
    """The console's own path as the browser sees it, proxy prefix included, ending in `/`."""
    prefix = request.headers.get("X-Forwarded-Prefix", "").strip()
    if not _PREFIX.fullmatch(prefix):
        prefix = ""
    return f"{prefix.rstrip('/')}/console/"


def guard(console: Console) -> Any:
    """The middleware that lets through only requests carrying the token or a session."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        tail = request.match_info.route.resource
        name = tail.canonical if tail is not None else ""
        if name.startswith("/console/static/") or name == "/console/login":
            if name == "/console/login" and request.method == "POST" and not same_origin(request):
                raise web.HTTPForbidden(text="cross-origin post refused")
            return await handler(request)
        client = request.remote or "unknown"
        bearer = auth.bearer_valid(console.token, request.headers.get("Authorization"))
        if bearer is not None:
            if (wait := console.brake.wait_s(client, clock.monotonic())) > 0:
                return slow_down(wait)
            if not bearer:
                console.brake.failed(client, clock.monotonic())
                log.warning("console.token_refused", client=client)
                raise web.HTTPUnauthorized(
                    text="wrong console token", headers={"WWW-Authenticate": "Bearer"}
                )
            console.brake.succeeded(client)
            request[WHO] = "bearer"
            return await handler(request)
        session = request.cookies.get(auth.COOKIE)
        if not auth.session_valid(console.token, session, clock.now().timestamp()):
            if request.method != "GET":
                raise web.HTTPUnauthorized(text="sign in to the console first")
            request[REFUSED] = True
            return await request.app[LOGIN_FORM](request)
        assert session is not None
        request[WHO] = "session"
        request[SESSION] = session
        if request.method == "POST":
            form = await request.post()
            if not same_origin(request) or not auth.csrf_valid(
                console.token, session, str(form.get("csrf", ""))
            ):
                log.warning("console.csrf_refused", client=client, path=request.path)
                raise web.HTTPForbidden(text="form expired or posted from elsewhere: reload it")
        return await handler(request)

    return check


def headers(secrets: list[str]) -> Any:
    """The middleware that adds security headers and turns any failure into one clear answer."""

    @web.middleware
    async def answer(request: web.Request, handler: Handler) -> web.StreamResponse:
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

    return answer


def same_origin(request: web.Request) -> bool:
    """Whether a post comes from the console's own pages (a browser's `Origin`, when sent)."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("X-Forwarded-Host") or request.host
    return urlsplit(origin).netloc == host


def secure(request: web.Request) -> bool:
    """Whether the browser reached the console over HTTPS (directly or through a proxy)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def slow_down(wait_s: float) -> web.Response:
    """429 with `Retry-After`: the brake holds this client for `wait_s` more."""
    retry = str(max(1, math.ceil(wait_s)))
    return web.Response(
        status=429,
        text=f"too many wrong tokens: try again in {retry}s\n",
        headers={"Retry-After": retry},
    )
