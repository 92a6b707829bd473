"""The bridge's state in Redis: snapshots, scope watermarks, leases, the outbox, quarantine.

Everything that must happen together is one Lua script: a page's snapshots are
compared and replaced, its events appended to the outbox and the scope's
watermark moved in one step, and only while the caller still holds the lease.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bridge import clock, keys, metrics
from bridge.errors import BridgeError
from bridge.packing import LUA_SPLIT, pack, unpack

# A page's snapshots and events travel packed (`bridge.packing`), and so do the bucket
# key names, so these scripts name keys they were not given in KEYS: the bridge needs
# one Redis server, not a cluster.
_COMMIT = (
    LUA_SPLIT
    + """
-- KEYS: lease, outbox, scope state, quarantine, quarantine order, dropped counts.
-- ARGV: token, watermark, maxlen, bucket keys (lengths, bytes),
--   snapshots: per write 4 lengths (bucket index, field, expected, new) and their bytes,
--   events: per event 6 lengths (id, subject, type, feed, course, json) and their bytes,
--   quarantine count, most quarantined kept ('': no cap), now ms, the dropped count's
--   field, quarantine (key, value) pairs, then (field, value) pairs of scope state.
-- Returns {0, quarantined records dropped to keep within the cap}, {1} when fenced,
-- {2, n} when snapshot n changed.
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
local i = 14
for n = 1, tonumber(ARGV[10]) do
  if ARGV[i + 1] == '' then
    redis.call('hdel', KEYS[4], ARGV[i])
    redis.call('zrem', KEYS[5], ARGV[i])
  else
    redis.call('hset', KEYS[4], ARGV[i], ARGV[i + 1])
    redis.call('zadd', KEYS[5], ARGV[12], ARGV[i])
  end
  i = i + 2
end
-- Over the cap, the records quarantined longest ago go first.
local dropped = 0
if ARGV[10] ~= '0' and ARGV[11] ~= '' then
  local over = redis.call('hlen', KEYS[4]) - tonumber(ARGV[11])
  if over > 0 then
    if redis.call('zcard', KEYS[5]) < redis.call('hlen', KEYS[4]) then
      -- quarantined before their order was kept: the oldest of all
      for _, key in ipairs(redis.call('hkeys', KEYS[4])) do
        redis.call('zadd', KEYS[5], 'NX', 0, key)
      end
    end
    local oldest = redis.call('zpopmin', KEYS[5], over)
    for n = 1, #oldest, 2 do redis.call('hdel', KEYS[4], oldest[n]) end
    dropped = #oldest / 2
    redis.call('hincrby', KEYS[6], ARGV[13], dropped)
  end
end
if ARGV[2] ~= '' then
  local old = tonumber(redis.call('hget', KEYS[3], 'watermark') or '0')
  if tonumber(ARGV[2]) > old then redis.call('hset', KEYS[3], 'watermark', ARGV[2]) end
end
for n = i, #ARGV, 2 do redis.call('hset', KEYS[3], ARGV[n], ARGV[n + 1]) end
return {0, dropped}
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


class Fenced(BridgeError):
    """The lease was lost: another replica owns the scope now, so nothing was written."""


class Conflict(BridgeError):
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


#: A sink's consumer group unfed this long is warned about, at most this often.
_STALE_WARN_AFTER_S = 600.0
_STALE_WARN_EVERY_S = 3600.0

log = structlog.get_logger(__name__)


class Store:
    """Redis access for the engine; every key comes from `bridge.keys`.

    `max_quarantined` caps each feed's quarantine (the oldest go first);
    `removed_sink_grace_s` is how long the outbox keeps entries for a sink no
    replica feeds any more before its consumer group is dropped. `keep_recent` is
    how many of the newest events the outbox keeps after every sink has them, for
    the console's recent events.
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        outbox_maxlen: int | None = None,
        max_quarantined: int | None = None,
        removed_sink_grace_s: float = 7 * 86400.0,
        keep_recent: int = 0,
    ) -> None:
        self.redis = redis
        self.keep_recent = keep_recent
        self.prefix = prefix
        self.outbox_maxlen = outbox_maxlen
        self.max_quarantined = max_quarantined
        self.removed_sink_grace_s = removed_sink_grace_s
        #: When each stale consumer group was last warned about (monotonic seconds).
        self._warned: dict[str, float] = {}
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
            "" if self.max_quarantined is None else str(self.max_quarantined),
            int(clock.now().timestamp() * 1000),
            f"quarantine:{feed}",
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
            keys.quarantine_order(self.prefix, feed),
            keys.dropped(self.prefix),
        ]
        result = await self._commit(keys=script_keys, args=args)
        if result[0] == 1:
            raise Fenced(f"lease on {feed}/{scope} lost; another replica sweeps it now")
        if result[0] == 2:
            raise Conflict(f"snapshot {result[1]} of the page changed while it was diffed")
        if int(result[1]):
            metrics.QUARANTINE_DROPPED.labels(feed).inc(int(result[1]))
            log.warning(
                "quarantine.dropped",
                feed=feed,
                dropped=int(result[1]),
                max_quarantined=self.max_quarantined,
            )
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

    async def trim_outbox(self, *, keep: Collection[str] = ()) -> int:
        """Drop outbox entries every sink has read and acknowledged; returns how many went.

        The floor is the oldest entry any consumer group still needs: its oldest
        pending entry, or the entry after the last one it read. With no sink at all
        nothing is trimmed. A sink's group that no replica has fed for
        `removed_sink_grace_s` (the sink left the config) is warned about, then
        dropped, so it does not hold every entry forever; the sinks named in `keep`
        (those configured here) never are.
        """
        stream = keys.outbox(self.prefix)
        try:
            groups = await self.redis.xinfo_groups(stream)
        except ResponseError:
            return 0
        seen = await self.redis.hgetall(keys.sinks_seen(self.prefix))
        fed_at = {_text(k): int(v) for k, v in seen.items()}
        kept = {keys.sink_group(sink) for sink in keep}
        floors: list[tuple[int, int]] = []
        for group in groups:
            name = _text(group["name"])
            if name not in kept and await self._drop_if_stale(stream, name, fed_at.get(name)):
                continue
            pending = await self.redis.xpending(stream, name)
            if pending and pending.get("pending"):
                floors.append(_stream_id(_text(pending["min"])))
            else:
                ms, seq = _stream_id(_text(group["last-delivered-id"]))
                floors.append((ms, seq + 1))
        if not floors:
            return 0
        if self.keep_recent > 0:
            newest: Any = await self.redis.xrevrange(stream, count=self.keep_recent)
            if len(newest) < self.keep_recent:
                return 0
            floors.append(_stream_id(_text(newest[-1][0])))
        ms, seq = min(floors)
        return int(await self.redis.xtrim(stream, minid=f"{ms}-{seq}", approximate=False))

    async def _drop_if_stale(self, stream: str, group: str, fed_at_ms: int | None) -> bool:
        """Drop a sink's consumer group nobody has fed within the grace period; whether it went.

        A group never seen fed (made by an older version) starts its grace period now.
        """
        sink_prefix = keys.sink_group("")
        if not group.startswith(sink_prefix):
            return False  # not a sink's: someone else reads the outbox, and says when
        sink = group.removeprefix(sink_prefix)
        now_ms = int(clock.now().timestamp() * 1000)
        if fed_at_ms is None:
            await self.redis.hsetnx(keys.sinks_seen(self.prefix), group, now_ms)
            return False
        idle_s = max(0.0, (now_ms - fed_at_ms) / 1000)
        if idle_s >= self.removed_sink_grace_s:
            await self.redis.xgroup_destroy(stream, group)
            await self.redis.hdel(keys.sinks_seen(self.prefix), group)
            await self.redis.delete(keys.sink_feeder(self.prefix, sink))
            await self.redis.hincrby(keys.dropped(self.prefix), "sink_groups", 1)
            metrics.SINK_GROUPS_DROPPED.labels(sink).inc()
            self._warned.pop(group, None)
            log.warning("outbox.sink_group_dropped", sink=sink, unfed_s=round(idle_s))
            return True
        warned = self._warned.get(group)
        if idle_s >= _STALE_WARN_AFTER_S and (
            warned is None or clock.monotonic() - warned >= _STALE_WARN_EVERY_S
        ):
            self._warned[group] = clock.monotonic()
            log.warning(
                "outbox.sink_group_unfed",
                sink=sink,
                unfed_s=round(idle_s),
                dropped_in_s=round(self.removed_sink_grace_s - idle_s),
                hint="a sink no longer configured keeps the outbox from being trimmed until then",
            )
        return False

    async def dropped_counts(self) -> dict[str, int]:
        """What the caps dropped so far: `dead_letters:<sink>`, `quarantine:<feed>`,
        `sink_groups`."""
        raw = await self.redis.hgetall(keys.dropped(self.prefix))
        return {_text(k): int(v) for k, v in raw.items()}

    async def read_outbox(
        self, count: int = 1000, after: str = "-"
    ) -> list[tuple[str, dict[str, str]]]:
        """Outbox entries in order (for status, tests and the simple sinks)."""
        entries = await self.redis.xrange(keys.outbox(self.prefix), min=after, count=count)
        return [
            (_text(i), {_text(k): _text(v) for k, v in (f or {}).items()}) for i, f in entries or []
        ]

    # -- the data set itself --------------------------------------------------------------

    async def ensure_marker(self) -> str:
        """This data set's marker: a random value written if there is none, then read back."""
        value = await self.redis.eval(
            "redis.call('set', KEYS[1], ARGV[1], 'NX') return redis.call('get', KEYS[1])",
            1,
            keys.marker(self.prefix),
            secrets.token_hex(8),
        )
        return _text(value)

    async def marker(self) -> str | None:
        """The data set's marker, None if there is none (never written, or the data was lost)."""
        value = await self.redis.get(keys.marker(self.prefix))
        return None if value is None else _text(value)

    async def drop_unfounded_baseline(self, feed: str, scope: str) -> bool:
        """Forget a scope's finished baseline if it left no watermark; whether it did.

        A sweep that began before Redis lost its data can still mark its baseline done
        in the empty data set: the next sweep would then report every record as new.
        """
        dropped = await self.redis.eval(
            "local s = redis.call('hmget', KEYS[1], 'baseline', 'watermark') "
            "if s[1] == 'done' and not s[2] then "
            "  return redis.call('hdel', KEYS[1], 'baseline') "
            "end return 0",
            1,
            keys.scope_state(self.prefix, feed, scope),
        )
        return bool(dropped)

    async def redis_settings(self) -> dict[str, str] | None:
        """Redis's `appendonly`, `save` and `maxmemory-policy`; None if CONFIG is refused."""
        settings: dict[str, str] = {}
        try:
            for name in ("appendonly", "save", "maxmemory-policy"):
                reply = await self.redis.config_get(name)
                settings.update({_text(k): _text(v) for k, v in reply.items()})
        except ResponseError:  # CONFIG disabled or renamed, as managed services do
            return None
        return settings


def _stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_risks(settings: dict[str, str]) -> list[str]:
    """What in Redis's settings can lose the bridge's data: no persistence, evicting keys."""
    risks: list[str] = []
    if settings.get("appendonly", "no") != "yes" and not settings.get("save", "").strip():
        risks.append(
            "Redis persists nothing (appendonly no, save ''): a restart loses every snapshot "
            "and queued event; set appendonly yes"
        )
    policy = settings.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        risks.append(
            f"Redis maxmemory-policy is {policy}: it may evict snapshots and queued events "
            "when memory runs out; set maxmemory-policy noeviction"
        )
    return risks
