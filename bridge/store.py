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
from bridge.packing import LUA_SPLIT, pack, unpack

# A page's snapshots and events travel packed (`bridge.packing`), and so do the bucket
# key names, so these scripts name keys they were not given in KEYS: the bridge needs
# one Redis server, not a cluster.
_COMMIT = (
    LUA_SPLIT
    + """
-- KEYS: lease, outbox, scope state, quarantine.
-- ARGV: token, watermark, maxlen, bucket keys (lengths, bytes),
--   snapshots: per write 4 lengths (bucket index, field, expected, new) and their bytes,
--   events: per event 6 lengths (id, subject, type, feed, course, json) and their bytes,
--   quarantine count, quarantine (key, value) pairs, then (field, value) pairs of scope state.
if ARGV[1] ~= '' and redis.call('get', KEYS[1]) ~= ARGV[1] then return {1} end
local buckets = split(ARGV[4], ARGV[5])
local snap = split(ARGV[6], ARGV[7])
for n = 1, #snap, 4 do
  local current = redis.call('hget', buckets[tonumber(snap[n])], snap[n + 1]) or ''
  if current ~= snap[n + 2] then return {2, (n + 3) / 4} end
end
for n = 1, #snap, 4 do
  local key = buckets[tonumber(snap[n])]
  if snap[n + 3] == '' then
    redis.call('hdel', key, snap[n + 1])
  else
    redis.call('hset', key, snap[n + 1], snap[n + 3])
  end
end
local ev = split(ARGV[8], ARGV[9])
for n = 1, #ev, 6 do
  if ARGV[3] ~= '' then
    redis.call('xadd', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'id', ev[n], 'subject', ev[n + 1],
      'type', ev[n + 2], 'feed', ev[n + 3], 'course', ev[n + 4], 'event', ev[n + 5])
  else
    redis.call('xadd', KEYS[2], '*', 'id', ev[n], 'subject', ev[n + 1], 'type', ev[n + 2],
      'feed', ev[n + 3], 'course', ev[n + 4], 'event', ev[n + 5])
  end
end
local i = 11
for n = 1, tonumber(ARGV[10]) do
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
)

_READ = """
-- ARGV: what bucket keys start with, "bucket:length" of each field, the fields joined.
-- Returns the lengths of the stored values (0: none) and their bytes.
local lengths, values, pos = {}, {}, 1
for bucket, len in string.gmatch(ARGV[2], '(%d+):(%d+)') do
  len = tonumber(len)
  local value = redis.call('hget', ARGV[1] .. bucket, string.sub(ARGV[3], pos, pos + len - 1))
  pos = pos + len
  if value then
    lengths[#lengths + 1] = #value
    values[#values + 1] = value
  else
    lengths[#lengths + 1] = 0
  end
end
return {table.concat(lengths, ' '), table.concat(values)}
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


@dataclass(slots=True)
class SnapshotWrite:
    """Replace `expected` (b"" = absent) with `new` (b"" = delete) at one snapshot."""

    key: str
    field: bytes
    expected: bytes
    new: bytes


@dataclass(slots=True)
class OutboxEvent:
    """One event to append, with what routing needs next to the CloudEvent JSON."""

    id: str
    subject: str
    type: str
    feed: str
    course_id: str
    #: The CloudEvent as JSON text (bytes straight from the encoder are taken as they are).
    json: str | bytes


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

    async def read_snapshots(
        self, buckets: str, wanted: Sequence[tuple[int, bytes]]
    ) -> list[bytes | None]:
        """The stored snapshot (or None) for each (bucket number, field), in one script call.

        `buckets` is what the bucket keys start with (`keys.snapshot_buckets`).
        """
        if not wanted:
            return []
        meta = b" ".join([b"%d:%d" % (bucket, len(fld)) for bucket, fld in wanted])
        fields = b"".join([fld for _, fld in wanted])
        lengths, blob = await self._read(args=[buckets, meta, fields])
        return [value or None for value in unpack(lengths, blob)]

    async def scan_buckets(self, bucket_keys: Sequence[str]) -> list[dict[bytes, bytes]]:
        """Every snapshot in each of some buckets (one pipelined round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        for key in bucket_keys:
            pipe.hgetall(key)
        replies: list[dict[Any, Any]] = await pipe.execute()
        return [{_raw(k): _raw(v) for k, v in raw.items()} for raw in replies]

    async def commit(self, feed: str, scope: str, token: str, commit: Commit) -> None:
        """Apply a page atomically; raises `Fenced` or `Conflict` and then writes nothing."""
        buckets: list[bytes] = []
        index: dict[str, int] = {}
        snapshots: list[bytes] = []
        for w in commit.snapshots:
            n = index.get(w.key)
            if n is None:
                n = index[w.key] = len(index) + 1
                buckets.append(w.key.encode())
            snapshots += (b"%d" % n, w.field, w.expected, w.new)
        events: list[bytes] = []
        for e in commit.events:
            body = e.json if isinstance(e.json, bytes) else e.json.encode()
            events += (
                e.id.encode(), e.subject.encode(), e.type.encode(), e.feed.encode(),
                e.course_id.encode(), body,
            )  # fmt: skip
        args: list[Any] = [
            token,
            "" if commit.watermark_us is None else str(commit.watermark_us),
            "" if self.outbox_maxlen is None else str(self.outbox_maxlen),
            *pack(buckets),
            *pack(snapshots),
            *pack(events),
            len(commit.quarantine),
        ]
        for qkey, qvalue in commit.quarantine.items():
            args += [qkey, qvalue]
        for skey, svalue in commit.state.items():
            args += [skey, svalue]
        script_keys = [
            keys.lease(self.prefix, feed, scope),
            keys.outbox(self.prefix),
            keys.scope_state(self.prefix, feed, scope),
            keys.quarantine(self.prefix, feed),
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
