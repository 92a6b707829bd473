"""Sharing one Absorb token between every worker and replica.

Absorb keeps one token per admin user: a login invalidates the token before it.
Workers that each log in knock each other out, so they share the token through a
cache and only one of them logs in again when it goes stale. Every login goes
through the cache's login guard (`login_guard.py`), which paces logins and backs
off after Absorb refuses the credentials.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Protocol

from redis.asyncio import Redis

from bridge import clock, keys
from bridge.absorb.login_guard import (
    Login,
    LoginGuard,
    LoginPolicy,
    MemoryLoginGuard,
    RedisLoginGuard,
    guarded_login,
)

#: Absorb tokens live four hours; the cache lets go a little earlier.
DEFAULT_TOKEN_TTL_S = 4 * 3600 - 600


class TokenCache(Protocol):
    """Where the current token lives; `refresh` makes sure only one caller logs in."""

    async def get(self) -> str | None:
        """The current token, or None when there is none (or it is too old to use)."""
        ...

    async def refresh(self, stale: str | None, login: Login, *, credentials: str = "") -> str:
        """A token other than `stale`: someone else's fresh one, or one from `login()`.

        The login goes only if the guard lets it (`credentials` tells credentials
        apart, see `login_guard.fingerprint`); otherwise AbsorbAuthError says when.
        """
        ...


class MemoryTokenCache:
    """A token cache for the workers of one process."""

    def __init__(
        self, ttl_s: float = DEFAULT_TOKEN_TTL_S, *, login_policy: LoginPolicy | None = None
    ) -> None:
        self.ttl_s = ttl_s
        self.guard: LoginGuard = MemoryLoginGuard(login_policy)
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str | None:
        """The current token, if it has not outlived the TTL."""
        return self._token if clock.monotonic() < self._expires else None

    async def refresh(self, stale: str | None, login: Login, *, credentials: str = "") -> str:
        """Log in once for every caller that saw the same stale token, if the guard lets it."""
        async with self._lock:
            current = await self.get()
            if current is not None and current != stale:
                return current
            self._token = await guarded_login(self.guard, credentials, login)
            self._expires = clock.monotonic() + self.ttl_s
            return self._token


_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisTokenCache:
    """A token cache shared by every replica through Redis.

    The login itself is guarded by a short lock with an expiry, so a replica that
    dies while logging in holds the others back for `lock_ttl_s` at most.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        base_url: str,
        username: str,
        ttl_s: float = DEFAULT_TOKEN_TTL_S,
        lock_ttl_s: float = 30.0,
        poll_s: float = 0.05,
        login_policy: LoginPolicy | None = None,
    ) -> None:
        self._redis = redis
        self._key = keys.absorb_token(prefix, base_url, username)
        self._lock_key = keys.absorb_token_lock(prefix, base_url, username)
        self.guard: LoginGuard = RedisLoginGuard(
            redis,
            backoff_key=keys.absorb_login_backoff(prefix, base_url, username),
            logins_key=keys.absorb_logins(prefix, base_url, username),
            policy=login_policy,
        )
        self.ttl_s = ttl_s
        self.lock_ttl_s = lock_ttl_s
        self.poll_s = poll_s
        self._release = redis.register_script(_RELEASE)

    async def get(self) -> str | None:
        """The token stored in Redis, if any."""
        value = await self._redis.get(self._key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def refresh(self, stale: str | None, login: Login, *, credentials: str = "") -> str:
        """Take a fresh token another replica stored, or log in under the lock and store one.

        The guard is asked under the lock, so a replica that waited for another's
        failed login sees the back-off that login started.
        """
        owner = secrets.token_hex(8)
        while True:
            current = await self.get()
            if current is not None and current != stale:
                return current
            # Not worth the lock while the guard says no: callers fail at once, not in turn.
            wait = await self.guard.peek(credentials)
            if wait is not None:
                raise wait.error(self.guard.policy)
            if await self._redis.set(
                self._lock_key, owner, nx=True, px=int(self.lock_ttl_s * 1000)
            ):
                try:
                    current = await self.get()
                    if current is not None and current != stale:
                        return current
                    token = await guarded_login(self.guard, credentials, login)
                    await self._redis.set(self._key, token, px=int(self.ttl_s * 1000))
                    return token
                finally:
                    await self._release(keys=[self._lock_key], args=[owner])
            await asyncio.sleep(self.poll_s)
