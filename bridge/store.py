"""The bridge's state in Redis: snapshots, scope watermarks, leases, the outbox, quarantine.

Everything that must happen together is one Lua script: a page's snapshots are
compared and replaced, its events appended to the outbox and the scope's
watermark moved in one step, and only while the caller still holds the lease.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bridge import keys

_COMMIT = """
-- KEYS: lease, outbox, scope state, quarantine, bucket keys...
-- ARGV: token, watermark, nsnap, nevent, nquar, maxlen, then the triples below
if ARGV[1] ~= '' and redis.call('get', KEYS[1]) ~= ARGV[1] then return {1} end
local nsnap, nevent, nquar = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local i = 7
for n = 1, nsnap do
  local key = KEYS[tonumber(ARGV[i])]
  local current = redis.call('hget', key, ARGV[i + 1]) or ''
  if current ~= ARGV[i + 2] then return {2, n} end
  i = i + 4
end
i = 7
for n = 1, nsnap do
  local key = KEYS[tonumber(ARGV[i])]
  if ARGV[i + 3] == '' then
    redis.call('hdel', key, ARGV[i + 1])
  else
    redis.call('hset', key, ARGV[i + 1], ARGV[i + 3])
  end
  i = i + 4
end
for n = 1, nevent do
  if ARGV[6] ~= '' then
    redis.call('xadd', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[i], 'subject', ARGV[i + 1],
      'type', ARGV[i + 2], 'feed', ARGV[i + 3], 'course', ARGV[i + 4], 'event', ARGV[i + 5])
  else
    redis.call('xadd', KEYS[2], '*', 'id', ARGV[i], 'subject', ARGV[i + 1], 'type', ARGV[i + 2],
      'feed', ARGV[i + 3], 'course', ARGV[i + 4], 'event', ARGV[i + 5])
  end
  i = i + 6
end
for n = 1, nquar do
  if ARGV[i + 1] == '' then
    redis.call('hdel', KEYS[4], ARGV[i])
  else
    redis.call('hset', KEYS[4], ARGV[i], ARGV[i + 1])
  end
  i = i + 2
end
if ARGV[2] ~= '' then
  local old = tonumber(redis.call('hget', KEYS[3], 'watermark') or '0')
  if tonumber(ARGV[2]) > old then redis.call('hset', KEYS[3], 'watermark', ARGV[2]) end
end
for n = i, #ARGV, 2 do redis.call('hset', KEYS[3], ARGV[n], ARGV[n + 1]) end
return {0}
"""

_READ = """
-- KEYS: bucket keys. ARGV: (key index, field)... -> the stored values, false where none.
local out = {}
for i = 1, #ARGV, 2 do
  out[#out + 1] = redis.call('hget', KEYS[tonumber(ARGV[i])], ARGV[i + 1])
end
return out
"""

_ACQUIRE = """
-- KEYS: lease, fence. ARGV: owner, ttl ms. A free lease gets a new, higher token.
local held = redis.call('get', KEYS[1])
if held then
  if string.sub(held, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '/' then
    redis.call('pexpire', KEYS[1], ARGV[2])
    return held
  end
  return false
end
local token = ARGV[1] .. '/' .. redis.call('incr', KEYS[2])
redis.call('set', KEYS[1], token, 'PX', ARGV[2])
return token
"""

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class Fenced(Exception):
    """The lease was lost: another replica owns the scope now, so nothing was written."""


class Conflict(Exception):
    """A snapshot changed since it was read; read again and diff again."""


@dataclass
class SnapshotWrite:
    """Replace `expected` (b"" = absent) with `new` (b"" = delete) at one snapshot."""

    key: str
    field: bytes
    expected: bytes
    new: bytes


@dataclass
class OutboxEvent:
    """One event to append, with what routing needs next to the CloudEvent JSON."""

    id: str
    subject: str
    type: str
    feed: str
    course_id: str
    json: str


@dataclass
class Commit:
    """Everything one page of a sweep writes."""

    snapshots: list[SnapshotWrite] = field(default_factory=list)
    events: list[OutboxEvent] = field(default_factory=list)
    #: Quarantine entries to set (value JSON) or clear (value "").
    quarantine: dict[str, str] = field(default_factory=dict)
    watermark_us: int | None = None
    #: Other fields of the scope's state hash to set.
    state: dict[str, str] = field(default_factory=dict)


class Store:
    """Redis access for the engine; every key comes from `bridge.keys`."""

    def __init__(self, redis: Redis, prefix: str, *, outbox_maxlen: int | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self.outbox_maxlen = outbox_maxlen
        self._commit = redis.register_script(_COMMIT)
        self._read = redis.register_script(_READ)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self.owner = secrets.token_hex(6)

    # -- scope state ----------------------------------------------------------------------

    async def scope_state(self, feed: str, scope: str) -> dict[str, str]:
        """A scope's state hash (empty before its first sweep)."""
        raw = await self.redis.hgetall(keys.scope_state(self.prefix, feed, scope))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def set_scope_state(self, feed: str, scope: str, values: dict[str, str]) -> None:
        """Set fields of a scope's state that need no fencing (schedule bookkeeping)."""
        key = keys.scope_state(self.prefix, feed, scope)
        mapping: dict[Any, Any] = dict(values)
        await self.redis.hset(key, mapping=mapping)
        await self.redis.sadd(keys.scopes(self.prefix, feed), scope)

    async def known_scopes(self, feed: str) -> list[str]:
        """Every scope of a feed that has been swept."""
        members = await self.redis.smembers(keys.scopes(self.prefix, feed))
        return sorted(_text(m) for m in members)

    # -- snapshots ------------------------------------------------------------------------

    async def read_snapshots(self, wanted: Sequence[tuple[str, bytes]]) -> list[bytes | None]:
        """The stored snapshot (or None) for each (bucket key, field)."""
        if not wanted:
            return []
        # One script call for the whole page: a page's records fall into many buckets,
        # and a command per bucket costs more client time than the reads themselves.
        index: dict[str, int] = {}
        args: list[Any] = []
        for key, fld in wanted:
            args += [index.setdefault(key, len(index) + 1), fld]
        values = await self._read(keys=list(index), args=args)
        return [value or None for value in values]

    async def scan_bucket(self, key: str) -> dict[bytes, bytes]:
        """Every snapshot in one bucket."""
        raw = await self.redis.hgetall(key)
        return {_raw(k): _raw(v) for k, v in raw.items()}

    async def commit(self, feed: str, scope: str, token: str, commit: Commit) -> None:
        """Apply a page atomically; raises `Fenced` or `Conflict` and then writes nothing."""
        bucket_keys = sorted({w.key for w in commit.snapshots})
        index = {key: n for n, key in enumerate(bucket_keys, start=5)}
        args: list[Any] = [
            token,
            "" if commit.watermark_us is None else str(commit.watermark_us),
            len(commit.snapshots),
            len(commit.events),
            len(commit.quarantine),
            "" if self.outbox_maxlen is None else str(self.outbox_maxlen),
        ]
        for w in commit.snapshots:
            args += [index[w.key], w.field, w.expected, w.new]
        for e in commit.events:
            args += [e.id, e.subject, e.type, e.feed, e.course_id, e.json]
        for qkey, qvalue in commit.quarantine.items():
            args += [qkey, qvalue]
        for skey, svalue in commit.state.items():
            args += [skey, svalue]
        script_keys = [
            keys.lease(self.prefix, feed, scope),
            keys.outbox(self.prefix),
            keys.scope_state(self.prefix, feed, scope),
            keys.quarantine(self.prefix, feed),
            *bucket_keys,
        ]
        result = await self._commit(keys=script_keys, args=args)
        if result[0] == 1:
            raise Fenced(f"lease on {feed}/{scope} lost; another replica sweeps it now")
        if result[0] == 2:
            raise Conflict(f"snapshot {result[1]} of the page changed while it was diffed")
        await self.redis.sadd(keys.scopes(self.prefix, feed), scope)

    # -- leases ---------------------------------------------------------------------------

    async def acquire(self, feed: str, scope: str, ttl_ms: int) -> str | None:
        """The lease token if this store's owner holds (or just took) the scope, else None."""
        token = await self._acquire(
            keys=[keys.lease(self.prefix, feed, scope), keys.fence(self.prefix, feed, scope)],
            args=[self.owner, ttl_ms],
        )
        return None if token is None else _text(token)

    async def renew(self, feed: str, scope: str, token: str, ttl_ms: int) -> bool:
        """Extend a held lease; False if it was lost."""
        done = await self._renew(keys=[keys.lease(self.prefix, feed, scope)], args=[token, ttl_ms])
        return bool(done)

    async def release(self, feed: str, scope: str, token: str) -> None:
        """Give a lease back so another replica may take the scope at once."""
        await self._release(keys=[keys.lease(self.prefix, feed, scope)], args=[token])

    # -- quarantine -----------------------------------------------------------------------

    async def quarantined(self, feed: str) -> dict[str, str]:
        """Quarantined records of a feed: key -> JSON with raw text, error and scope."""
        raw = await self.redis.hgetall(keys.quarantine(self.prefix, feed))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def outbox_length(self) -> int:
        """Events in the outbox stream."""
        return int(await self.redis.xlen(keys.outbox(self.prefix)))

    async def trim_outbox(self) -> int:
        """Drop outbox entries every sink has read and acknowledged; returns how many went.

        The floor is the oldest entry any consumer group still needs: its oldest
        pending entry, or the entry after the last one it read. With no sink at all
        nothing is trimmed.
        """
        stream = keys.outbox(self.prefix)
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError:
            return 0
        floors: list[tuple[int, int]] = []
        for group in groups:
            name = _text(group["name"])
            pending = await self.redis.xpending(stream, name)
            if pending and pending.get("pending"):
                floors.append(_stream_id(_text(pending["min"])))
            else:
                ms, seq = _stream_id(_text(group["last-delivered-id"]))
                floors.append((ms, seq + 1))
        if not floors:
            return 0
        ms, seq = min(floors)
        return int(await self.redis.xtrim(stream, minid=f"{ms}-{seq}", approximate=False))

    async def read_outbox(
        self, count: int = 1000, after: str = "-"
    ) -> list[tuple[str, dict[str, str]]]:
        """Outbox entries in order (for status, tests and the simple sinks)."""
        entries = await self.redis.xrange(keys.outbox(self.prefix), min=after, count=count)
        return [
            (_text(i), {_text(k): _text(v) for k, v in (f or {}).items()}) for i, f in entries or []
        ]


def _stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
