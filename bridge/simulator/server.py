"""The simulator as one object: tenant, auth, faults, activity, and the aiohttp app serving them."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from bridge.ratelimit import RateLimiter
from bridge.simulator.activity import Activity
from bridge.simulator.auth import Auth
from bridge.simulator.faults import Faults
from bridge.simulator.generate import TenantSpec, generate
from bridge.simulator.queries import QueryCache
from bridge.simulator.records import RawJson, User
from bridge.simulator.simclock import SimClock
from bridge.simulator.tenant import SimError, Tenant
from bridge.simulator.webhooks import Announcer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONTROL_PREFIX = "/_sim/"


@dataclass
class SimulatorConfig:
    """Everything `absorb-bridge simulate` takes."""

    api_key: str
    username: str
    password: str
    tenant: TenantSpec = field(default_factory=TenantSpec)
    activity_per_second: float = 0.0
    token_ttl_s: float = 4 * 3600
    skew_s: float = 0.0
    faults: Faults = field(default_factory=Faults)


class _Throttle:
    """Absorb's server-side throttle: answers now, yes or no, at the faults' current rate."""

    def __init__(self) -> None:
        self._limiter: RateLimiter | None = None

    def allow(self, rate_per_s: float, burst: int) -> bool:
        limiter = self._limiter
        if limiter is None or (limiter.rate_per_s, limiter.burst) != (rate_per_s, burst):
            limiter = self._limiter = RateLimiter(rate_per_s, burst)
        return limiter.allow()


class Simulator:
    """A simulated Absorb tenant behind Absorb's Integration API v2."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.clock = SimClock(config.skew_s)
        self.admin = User(
            id=_admin_id(config.tenant.seed), first_name="Admin", last_name=config.username
        )
        self.tenant: Tenant = generate(config.tenant, self.clock, self.admin)
        self.auth = Auth(
            config.api_key, {config.username: config.password}, self.clock, config.token_ttl_s
        )
        self.faults = config.faults.model_copy()
        self.fault_rng = random.Random(config.tenant.seed + 1)
        self.activity = Activity(self.tenant, random.Random(config.tenant.seed + 2))
        self.activity.per_second = config.activity_per_second
        self.cache = QueryCache()
        self.requests: dict[str, int] = {}
        self.throttle = _Throttle()
        self.webhooks = Announcer(self.tenant, random.Random(config.tenant.seed + 3))
        self._tasks: list[asyncio.Task[None]] = []

    def app(self) -> web.Application:
        """The aiohttp application: Absorb's API plus the `/_sim/` control API."""
        from bridge.simulator import api, control

        app = web.Application(middlewares=[self._middleware])
        api.add_routes(app, self)
        control.add_routes(app, self)
        app.on_response_prepare.append(self._stamp_date)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _stamp_date(self, _request: web.Request, response: web.StreamResponse) -> None:
        # Absorb's clock, as a client learns it: the simulated time, not this machine's.
        response.headers["Date"] = format_http_date(self.clock.now())

    async def _on_startup(self, _app: web.Application) -> None:
        for name, job in (("sim-activity", self.activity.run), ("sim-webhooks", self.webhooks.run)):
            task = asyncio.create_task(job(), name=name)
            task.add_done_callback(_report_end)
            self._tasks.append(task)

    async def _on_cleanup(self, _app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def count(self, key: str) -> None:
        """Count a request outcome for `/_sim/state`."""
        self.requests[key] = self.requests.get(key, 0) + 1

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        self.count("total")
        faults = self.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.rate_limit_per_s and not self.throttle.allow(
            faults.rate_limit_per_s, faults.rate_limit_burst
        ):
            self.count("429")
            headers = {}
            if faults.retry_after_s is not None:
                headers["Retry-After"] = f"{faults.retry_after_s:g}"
            return _error(429, "API calls quota exceeded.", headers)
        if not self.auth.api_key_ok(request.headers.get("x-api-key")):
            self.count("401")
            return _error(401, "A valid x-api-key header is required.")
        if request.headers.get("x-api-version") != "2":
            self.count("400")
            return _error(400, "This API needs the header x-api-version: 2.")
        if faults.error_rate and self.fault_rng.random() < faults.error_rate:
            status = self.fault_rng.choice(faults.error_statuses)
            self.count(str(status))
            return _error(status, "An unexpected error occurred.")
        if (
            request.path != "/authenticate"
            and self.auth.user_of(request.headers.get("Authorization")) is None
        ):
            self.count("401")
            return _error(401, "Authorization has been denied for this request.")
        try:
            response = await handler(request)
        except SimError as e:
            self.count(str(e.status))
            return _error(e.status, e.message)
        except web.HTTPException as e:
            self.count(str(e.status))
            return _error(e.status, e.reason)
        self.count(str(response.status))
        if faults.malformed_rate and self.fault_rng.random() < faults.malformed_rate:
            return self._malform(response)
        return response

    def _malform(self, response: web.StreamResponse) -> web.StreamResponse:
        body = response.body if isinstance(response, web.Response) else None
        text = body.decode(errors="replace") if isinstance(body, bytes) else ""
        if len(text) > 2 and self.fault_rng.random() < 0.7:
            cut = text[: self.fault_rng.randint(1, len(text) - 1)]
        else:
            cut = "<html><body>Service Unavailable</body></html>"
        return web.Response(status=response.status, text=cut, content_type="application/json")


def json_response(data: Any, status: int = 200) -> web.Response:
    """A compact JSON reply, as Absorb sends; `RawJson` values are written as their text.

    A `RawJson` text may hold U+DC80..U+DCFF: each goes out as the byte it stands for
    (Python's `surrogateescape`), to play a reply that is not valid UTF-8.
    """
    body = dumps(data).encode("utf-8", "surrogateescape")
    return web.Response(status=status, body=body, content_type="application/json", charset="utf-8")


def dumps(data: Any) -> str:
    """Compact JSON of `data`, with the text of every `RawJson` in it spliced in verbatim."""
    spliced: list[str] = []

    def placeholder(value: Any) -> str:
        if not isinstance(value, RawJson):
            raise TypeError(f"{type(value).__name__} is not JSON")
        spliced.append(value.text)
        return f"\x00raw{len(spliced) - 1}\x00"

    text = json.dumps(data, separators=(",", ":"), default=placeholder)
    for n, raw in enumerate(spliced):
        # json.dumps writes the placeholder's NULs as \u0000: the quoted form is unique.
        text = text.replace(f'"\\u0000raw{n}\\u0000"', raw, 1)
    return text


def format_http_date(moment: datetime) -> str:
    """An HTTP `Date` header value (RFC 9110's IMF-fixdate) for `moment`."""
    return email.utils.format_datetime(moment.astimezone(UTC), usegmt=True)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"validations": [], "code": status, "message": message, "term": None, "_meta": {}}
    response = json_response(body, status)
    response.headers.update(headers or {})
    return response


def _admin_id(seed: int) -> str:
    return str(uuid.UUID(int=random.Random(-seed).getrandbits(128), version=4))


def _report_end(task: asyncio.Task[None]) -> None:
    """Log a background task (activity, webhooks) ending by anything but its cancellation."""
    if not task.cancelled() and task.exception() is not None:
        structlog.get_logger(__name__).error(
            "sim.task_ended", task=task.get_name(), error=repr(task.exception())
        )
