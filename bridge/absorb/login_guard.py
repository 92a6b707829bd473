"""Pacing logins to Absorb, so that a wrong password never locks the admin account.

Absorb may lock an admin user out after repeated failed logins. Every login of one
user on one tenant, from every worker and every replica, passes one guard:

- at most `max_logins` logins within `window_s` (5 a minute), refused or not;
- after Absorb refuses the credentials, no login with the same credentials before
  a back-off that doubles with each refusal in a row (30 s, 1 min, 2 min, 4 min,
  8 min, then every 10 min);
- a login Absorb accepts ends the back-off.

Credentials other than the refused ones (the password was fixed) may try at once,
still within the per-minute limit. The guard's state lives where the token does:
in Redis for `RedisTokenCache`, in memory for `MemoryTokenCache`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from redis.asyncio import Redis

from bridge import clock
from bridge.absorb.paths import Op
from bridge.absorb.timefmt import format_rfc3339
from bridge.errors import AbsorbAuthError, AbsorbError, BridgeError
from bridge.retry import backoff_s

Login = Callable[[], Awaitable[str]]

_ENDPOINT = f"{Op.AUTHENTICATE.route.method} {Op.AUTHENTICATE.route.path()}"
_REFUSED_CREDENTIALS = "Absorb refused the username, password or API key"
#: How much of a failed login's error the pace's error repeats.
_REASON_CHARS = 160
#: How long refusals in a row are remembered when nobody tries again.
_FORGET_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class LoginPolicy:
    """How often logins may go; the defaults keep far below any account lock-out."""

    max_logins: int = 5
    window_s: float = 60.0
    backoff_base_s: float = 30.0
    backoff_cap_s: float = 600.0

    def __post_init__(self) -> None:
        if not (self.max_logins >= 1 and self.window_s > 0 and self.backoff_base_s > 0):
            raise BridgeError(f"{self}: every number must be positive")
        if self.backoff_cap_s < self.backoff_base_s:
            raise BridgeError(f"{self}: backoff_cap_s is below backoff_base_s")

    def backoff_s(self, refusals: int) -> float:
        """The wait after `refusals` refusals in a row: doubling from the base, up to the cap."""
        return backoff_s(
            refusals, base_s=self.backoff_base_s, cap_s=self.backoff_cap_s, jitter=False
        )

    def backoffs_ms(self) -> list[int]:
        """The wait after 1, 2, … refusals until it reaches the cap (which then repeats), in ms."""
        waits = [int(self.backoff_s(1) * 1000)]
        while waits[-1] < int(self.backoff_cap_s * 1000):
            waits.append(int(self.backoff_s(len(waits) + 1) * 1000))
        return waits


@dataclass(frozen=True)
class Wait:
    """Why a login may not go now and when it may: `refusals` in a row, or 0 for the pace
    (then `last_failure` says why the latest login got no answer, if it did not)."""

    refusals: int
    next_at_ms: int
    last_failure: str = ""

    def error(self, policy: LoginPolicy, refused: AbsorbAuthError | None = None) -> AbsorbAuthError:
        """The error a caller sees: what happened (`refused`: Absorb's refusal just now) and
        when the next login goes."""
        now_ms = clock.now().timestamp() * 1000
        in_s = max(0.0, (self.next_at_ms - now_ms) / 1000)
        when = format_rfc3339(datetime.fromtimestamp(self.next_at_ms / 1000, UTC))
        if not self.refusals:
            # The pace alone would hide why the logins keep going: Absorb down, say.
            last = f"; the last one failed: {self.last_failure}" if self.last_failure else ""
            return AbsorbAuthError(
                _ENDPOINT,
                f"{policy.max_logins} logins to Absorb within {policy.window_s:g}s already; "
                f"the next goes at {when} (in {in_s:.0f}s), so that the admin user is not "
                f"locked out{last}",
            )
        times = "once" if self.refusals == 1 else f"{self.refusals} times in a row"
        message = (
            f"{_REFUSED_CREDENTIALS}, {times}; the next login goes at {when} (in {in_s:.0f}s), "
            "not before, so that the admin user is not locked out: check the absorb settings"
        )
        if refused is None:
            return AbsorbAuthError(_ENDPOINT, message)
        # What Absorb said goes last: health reports cut long messages short.
        said = _detail(refused).removeprefix(_REFUSED_CREDENTIALS).lstrip("; ")
        return AbsorbAuthError(
            refused.endpoint, f"{message}; {said}" if said else message, status=refused.status
        )


class LoginGuard(Protocol):
    """Where the guard's state lives; every call is atomic for every replica sharing it."""

    policy: LoginPolicy

    async def peek(self, fingerprint: str) -> Wait | None:
        """Why a login may not go now, if so; records nothing."""
        ...

    async def claim(self, fingerprint: str) -> Wait | None:
        """Record a login about to go, or say why it may not (and then record nothing)."""
        ...

    async def refused(self, fingerprint: str) -> Wait:
        """Record that Absorb refused these credentials; returns the back-off now in force."""
        ...

    async def failed(self, reason: str) -> None:
        """Record why a login failed without Absorb judging the credentials (it was down)."""
        ...

    async def accepted(self) -> None:
        """Record that Absorb accepted a login: the back-off ends."""
        ...


def fingerprint(api_key: str, username: str, password: str) -> str:
    """Tells credentials apart without keeping them (the API key salts the password)."""
    return hashlib.sha256("\x00".join((api_key, username, password)).encode()).hexdigest()[:16]


async def guarded_login(guard: LoginGuard, credentials: str, login: Login) -> str:
    """Run `login` if the guard lets it go now; a refusal by Absorb starts or extends the
    back-off, and the error says when the next login goes."""
    wait = await guard.claim(credentials)
    if wait is not None:
        raise wait.error(guard.policy)
    try:
        token = await login()
    except AbsorbAuthError as e:
        backoff = await guard.refused(credentials)
        raise backoff.error(guard.policy, e) from None
    except AbsorbError as e:
        await guard.failed(str(e))
        raise
    await guard.accepted()
    return token


def _detail(error: AbsorbAuthError) -> str:
    """What the refusal said, without the endpoint and status the new error repeats."""
    where = f"{error.endpoint} -> HTTP {error.status}" if error.status else error.endpoint
    return str(error).removeprefix(f"{where}: ")


def _now_ms() -> int:
    return int(clock.now().timestamp() * 1000)


class MemoryLoginGuard:
    """The guard for the workers of one process."""

    def __init__(self, policy: LoginPolicy | None = None) -> None:
        self.policy = policy or LoginPolicy()
        self._logins: deque[int] = deque()
        self._refused: tuple[str, int, int] | None = None  # fingerprint, refusals, next_at_ms
        self._last_failure = ""

    async def peek(self, fingerprint: str) -> Wait | None:
        """Why a login may not go now, if so."""
        return self._verdict(fingerprint, _now_ms())

    async def claim(self, fingerprint: str) -> Wait | None:
        """Record a login about to go, unless a back-off or the pace forbids it."""
        now = _now_ms()
        wait = self._verdict(fingerprint, now)
        if wait is None:
            self._logins.append(now)
        return wait

    def _verdict(self, fingerprint: str, now: int) -> Wait | None:
        if self._refused is not None:
            whose, refusals, next_at = self._refused
            if whose == fingerprint and now < next_at:
                return Wait(refusals, next_at)
        window_ms = int(self.policy.window_s * 1000)
        while self._logins and self._logins[0] <= now - window_ms:
            self._logins.popleft()
        if len(self._logins) >= self.policy.max_logins:
            return Wait(0, self._logins[0] + window_ms, self._last_failure)
        return None

    async def refused(self, fingerprint: str) -> Wait:
        """One more refusal of these credentials: the back-off doubles."""
        refusals = 1
        if self._refused is not None and self._refused[0] == fingerprint:
            refusals = self._refused[1] + 1
        next_at = _now_ms() + int(self.policy.backoff_s(refusals) * 1000)
        self._refused = (fingerprint, refusals, next_at)
        self._last_failure = ""
        return Wait(refusals, next_at)

    async def failed(self, reason: str) -> None:
        """Keep the reason for the pace's error."""
        self._last_failure = reason[:_REASON_CHARS]

    async def accepted(self) -> None:
        """The back-off ends."""
        self._refused = None
        self._last_failure = ""


# ARGV: now_ms, fingerprint, window_ms, max_logins, then the login's entry ('' to only look).
_CLAIM = """
local now = tonumber(ARGV[1])
local state = redis.call('hmget', KEYS[1], 'refusals', 'next_at_ms', 'fingerprint')
if state[1] and state[3] == ARGV[2] and now < tonumber(state[2]) then
  return {tonumber(state[1]), tonumber(state[2])}
end
local window = tonumber(ARGV[3])
redis.call('zremrangebyscore', KEYS[2], '-inf', now - window)
if redis.call('zcard', KEYS[2]) >= tonumber(ARGV[4]) then
  local oldest = redis.call('zrange', KEYS[2], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window, redis.call('hget', KEYS[1], 'last_failure') or ''}
end
if ARGV[5] ~= '' then
  redis.call('zadd', KEYS[2], now, ARGV[5])
  redis.call('pexpire', KEYS[2], window)
end
return false
"""

# ARGV: now_ms, fingerprint, forget_ms, then the back-off after 1, 2, … refusals.
_REFUSED = """
local state = redis.call('hmget', KEYS[1], 'refusals', 'fingerprint')
local refusals = 1
if state[1] and state[2] == ARGV[2] then refusals = tonumber(state[1]) + 1 end
local next_at = tonumber(ARGV[1]) + tonumber(ARGV[3 + math.min(refusals, #ARGV - 3)])
redis.call('hset', KEYS[1], 'refusals', refusals, 'next_at_ms', next_at, 'fingerprint', ARGV[2])
redis.call('hdel', KEYS[1], 'last_failure')
redis.call('pexpire', KEYS[1], ARGV[3])
return {refusals, next_at}
"""


class RedisLoginGuard:
    """The guard shared by every replica through Redis; each step is atomic."""

    def __init__(
        self, redis: Redis, *, backoff_key: str, logins_key: str, policy: LoginPolicy | None = None
    ) -> None:
        self.policy = policy or LoginPolicy()
        self._redis = redis
        self._keys = [backoff_key, logins_key]
        self._claim = redis.register_script(_CLAIM)
        self._refused = redis.register_script(_REFUSED)

    async def peek(self, fingerprint: str) -> Wait | None:
        """Why a login may not go now, if so."""
        return await self._verdict(fingerprint, "")

    async def claim(self, fingerprint: str) -> Wait | None:
        """Record a login about to go, unless a back-off or the pace forbids it."""
        # One entry per login, whichever replica makes it.
        return await self._verdict(fingerprint, secrets.token_hex(8))

    async def _verdict(self, fingerprint: str, member: str) -> Wait | None:
        policy = self.policy
        found = await self._claim(
            keys=self._keys,
            args=[_now_ms(), fingerprint, int(policy.window_s * 1000), policy.max_logins, member],
        )
        if found is None:
            return None
        last = found[2] if len(found) > 2 else b""
        return Wait(
            int(found[0]), int(found[1]), last.decode() if isinstance(last, bytes) else last
        )

    async def refused(self, fingerprint: str) -> Wait:
        """One more refusal of these credentials: the back-off doubles, for every replica."""
        refusals, next_at = await self._refused(
            keys=self._keys[:1],
            args=[_now_ms(), fingerprint, _FORGET_MS, *self.policy.backoffs_ms()],
        )
        return Wait(int(refusals), int(next_at))

    async def failed(self, reason: str) -> None:
        """Keep the reason for the pace's error, for every replica."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys[0], "last_failure", reason[:_REASON_CHARS])
            pipe.pexpire(self._keys[0], _FORGET_MS)
            await pipe.execute()

    async def accepted(self) -> None:
        """The back-off ends."""
        await self._redis.delete(self._keys[0])
