"""HTTP to Absorb: auth, rate limit, retries and decoding, shared by every operation."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import orjson
import structlog
from yarl import URL

from bridge import __version__, clock, metrics
from bridge.absorb.login_guard import fingerprint
from bridge.absorb.paths import Op, resolve_base_url
from bridge.absorb.token_cache import MemoryTokenCache, TokenCache
from bridge.errors import (
    AbsorbAuthError,
    AbsorbError,
    AbsorbRequestError,
    AbsorbResponseError,
    AbsorbUnavailableError,
    BridgeError,
)
from bridge.ratelimit import Limiter, RateLimiter
from bridge.redaction import excerpt
from bridge.retry import backoff_s, parse_retry_after

log = structlog.get_logger(__name__)

Params = Mapping[str, str | int | float | bool | list[str] | None]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the transport tries before it gives up on a call."""

    max_attempts: int = 6
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    #: A `Retry-After` longer than this is cut to it, so one reply cannot park a sweep for hours.
    retry_after_cap_s: float = 120.0


@dataclass(frozen=True)
class Credentials:
    """An Absorb admin user and the tenant's private API key."""

    api_key: str
    username: str
    password: str


class _Retryable(BridgeError):
    """A failed try that may be tried again."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        unprocessed: bool = False,
        malformed: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after_s = retry_after_s
        #: Absorb certainly did not act on the request, so even a write may go again.
        self.unprocessed = unprocessed
        self.malformed = malformed

    @property
    def kind(self) -> str:
        """A short reason for metrics: the HTTP status, `timeout`, `connect` or `malformed`."""
        if self.malformed:
            return "malformed"
        if self.status is not None:
            return str(self.status)
        return "connect" if self.unprocessed else "timeout"


class _Unauthorized(AbsorbAuthError):
    """A 401; `said` is the reply's excerpt, secrets masked (a careless server may echo them)."""

    def __init__(self, endpoint: str, said: str) -> None:
        super().__init__(endpoint, f"unauthorized: {said}", status=401)
        self.said = said


class AbsorbTransport:
    """Sends one operation at a time to Absorb and returns its decoded JSON body.

    One aiohttp session (pooled, keep-alive), one rate limiter (shared by replicas
    when given one) and one token cache serve every caller of the transport.
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        session: aiohttp.ClientSession | None = None,
        token_cache: TokenCache | None = None,
        max_requests_per_second: float = 20.0,
        limiter: Limiter | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        self._origin = URL(self.base_url).origin()
        self._credentials = credentials
        self._session = session
        self._owns_session = session is None
        self.token_cache: TokenCache = token_cache or MemoryTokenCache()
        self._limiter: Limiter = limiter or RateLimiter(max_requests_per_second)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._seen_tokens: list[str] = []
        self._fingerprint = fingerprint(
            credentials.api_key, credentials.username, credentials.password
        )
        #: Absorb's clock: the `Date` header of its latest reply (None before any reply).
        self.absorb_now: datetime | None = None

    async def close(self) -> None:
        """Close the HTTP session if the transport made it."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=30),
                headers={"User-Agent": f"absorb-bridge/{__version__}"},
            )
        return self._session

    def secrets(self) -> list[str]:
        """The values no message may show: API key, password and recent tokens."""
        c = self._credentials
        return [c.api_key, c.password, *self._seen_tokens]

    async def request(
        self,
        op: Op,
        *,
        ids: Mapping[str, str] | None = None,
        params: Params | None = None,
        body: Any = None,
    ) -> Any:
        """Call `op` with the shared token; on a 401 log in again once and retry."""
        token = await self.token_cache.get()
        if token is None:
            token = await self.token_cache.refresh(None, self.login, credentials=self._fingerprint)
        path = op.route.path(**(ids or {}))
        try:
            return await self._send(op, path, params, body, token)
        except AbsorbAuthError:
            # The token went stale (expired, or another login replaced it): take the
            # fresh one someone else stored, or log in for everyone, then try once more.
            fresh = await self.token_cache.refresh(token, self.login, credentials=self._fingerprint)
            return await self._send(op, path, params, body, fresh)

    async def login(self) -> str:
        """`POST /authenticate`: a new token (which invalidates this user's previous one).

        Call it through the token cache (`request` does), whose guard paces logins.
        """
        c = self._credentials
        body = {"username": c.username, "password": c.password, "privateKey": c.api_key}
        path = Op.AUTHENTICATE.route.path()
        try:
            token = await self._send(Op.AUTHENTICATE, path, None, body, None)
        except _Unauthorized as e:
            raise AbsorbAuthError(
                e.endpoint,
                f"Absorb refused the username, password or API key; it said: {e.said}",
                status=e.status,
            ) from None
        if not isinstance(token, str) or not token:
            raise AbsorbResponseError(
                f"POST {path}", "expected the token as a JSON string", status=200
            )
        self._seen_tokens = [*self._seen_tokens[-3:], token]
        log.info("absorb.authenticated", base_url=self.base_url)
        return token

    async def _send(
        self, op: Op, path: str, params: Params | None, body: Any, token: str | None
    ) -> Any:
        route = op.route
        endpoint = f"{route.method} {path}"
        headers = {
            "x-api-key": self._credentials.api_key,
            "x-api-version": "2",
            "Accept": "application/json",
        }
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        query = _encode_params(params)
        label = str(route)
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                reply = await self._try_once(route.method, path, query, body, headers, endpoint)
            except AbsorbError as e:
                metrics.ABSORB_REQUESTS.labels(label, str(e.status or "error")).inc()
                raise
            except _Retryable as failure:
                metrics.ABSORB_REQUESTS.labels(label, str(failure.status or "error")).inc()
                metrics.ABSORB_RETRIES.labels(failure.kind).inc()
                if not (route.idempotent or failure.unprocessed):
                    raise AbsorbUnavailableError(
                        endpoint,
                        f"{failure.reason}; a write is not repeated when it may have happened",
                        status=failure.status,
                    ) from None
                if attempt == self.retry.max_attempts:
                    error = AbsorbResponseError if failure.malformed else AbsorbUnavailableError
                    raise error(
                        endpoint,
                        f"gave up after {attempt} tries; last: {failure.reason}",
                        status=failure.status,
                    ) from None
                delay = self._delay(attempt, failure.retry_after_s)
                log.warning(
                    "absorb.retry",
                    endpoint=endpoint,
                    attempt=attempt,
                    reason=failure.reason,
                    status=failure.status,
                    delay_s=round(delay, 3),
                )
                await asyncio.sleep(delay)
                continue
            metrics.ABSORB_REQUESTS.labels(label, "2xx").inc()
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(retry_after_s, self.retry.retry_after_cap_s)
        r = self.retry
        return backoff_s(attempt, base_s=r.backoff_base_s, cap_s=r.backoff_cap_s, rng=self._rng)

    async def _try_once(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: Any,
        headers: dict[str, str],
        endpoint: str,
    ) -> Any:
        url = URL(self.base_url + path)
        if url.origin() != self._origin:
            # Paths quote every id, so this cannot happen; the credentials are worth the check.
            raise AbsorbRequestError(endpoint, "the path leaves Absorb's host; not sent")
        await self._limiter.acquire()
        try:
            # Redirects are never followed: the API key, password and token go to Absorb's
            # host and nowhere else, whatever a reply (or a proxy in the way) says.
            async with self._http().request(
                method,
                url,
                params=query,
                json=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                self.absorb_now = _date(resp.headers.get("Date")) or self.absorb_now
                location = resp.headers.get("Location")
        except TimeoutError:
            raise _Retryable(f"no reply within {self.timeout_s:g}s") from None
        except aiohttp.ClientConnectorError as e:
            # The connection was never made, so even a write can safely go again.
            raise _Retryable(f"cannot connect: {e.os_error or e}", unprocessed=True) from None
        except aiohttp.ClientError as e:
            raise _Retryable(f"connection failed: {type(e).__name__}: {e}") from None
        if status == 401:
            raise _Unauthorized(endpoint, excerpt(_text(raw), self.secrets(), limit=80))
        if 300 <= status < 400:
            raise AbsorbRequestError(endpoint, _redirected(url, location), status=status)
        if status == 429 or status >= 500:
            wait = parse_retry_after(retry_after, clock.now())
            raise _Retryable(
                f"HTTP {status}",
                status=status,
                retry_after_s=wait,
                unprocessed=status in (429, 503),
            )
        if not 200 <= status < 300:
            raise AbsorbRequestError(endpoint, excerpt(_text(raw), self.secrets()), status=status)
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # orjson refuses some valid JSON (integers beyond 64 bits): ask the stdlib
        try:
            # Bytes that are not UTF-8 become lone surrogates: a record's strange string,
            # which the sweep handles per record, rather than a page that cannot be read.
            return json.loads(raw.decode("utf-8", "surrogateescape"))
        except json.JSONDecodeError as e:
            text = _text(raw)
            message = (
                f"body is not valid JSON ({e.msg} at char {e.pos} of {len(text)}): "
                f"{excerpt(text, self.secrets())}"
            )
            # A cut-off body is usually the network's fault, so it is worth another try;
            # a write, though, may have happened, so only reads are retried.
            if method == "GET":
                raise _Retryable(message, status=status, malformed=True) from None
            raise AbsorbResponseError(endpoint, message, status=status) from None


def _redirected(url: URL, location: str | None) -> str:
    """A redirect's error: the host it pointed at, never its path or query (they may hold a
    token), and what to do about it."""
    target = "nowhere (no Location header)"
    if location:
        try:
            moved = url.join(URL(location))
            target = f"{moved.host}:{moved.port}" if moved.port else str(moved.host)
        except ValueError:
            target = "an unreadable Location"
    return (
        f"Absorb redirected to {excerpt(target, [])}; redirects are not followed, so the "
        "credentials never leave Absorb's host: check absorb.base_url"
    )


def _date(header: str | None) -> datetime | None:
    try:
        sent = email.utils.parsedate_to_datetime(header) if header else None
    except (TypeError, ValueError):
        return None
    return sent if sent is not None and sent.tzinfo is not None else None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _encode_params(params: Params | None) -> list[tuple[str, str]]:
    """Query pairs: None dropped, booleans as `true`/`false`, lists as repeated keys."""
    pairs: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        elif isinstance(value, list):
            pairs.extend((key, str(v)) for v in value)
        else:
            pairs.append((key, str(value)))
    return pairs
