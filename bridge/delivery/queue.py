"""A sink's delivery queue in Redis: one event per subject at the front, the rest held behind.

Events leave the outbox into the queue atomically with their acknowledgement, so
the outbox can be trimmed and a crash loses nothing. Only the oldest queued
event of each subject is ever due; the others wait in the subject's list until
it is delivered or dead-lettered, which keeps a sink's events of one enrollment
in order across retries and replicas. Claiming an event hides it for a while
instead of removing it, so an event claimed by a replica that dies comes back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bridge import keys

_ENQUEUE = """
-- KEYS: outbox, entries, blocked, due. ARGV: group, now ms, held prefix, (id, subject, payload)...
for i = 4, #ARGV, 3 do
  local id, subject = ARGV[i], ARGV[i + 1]
  if redis.call('hexists', KEYS[2], id) == 0 then
    redis.call('hset', KEYS[2], id, ARGV[i + 2])
    if redis.call('hexists', KEYS[3], subject) == 1 then
      redis.call('rpush', ARGV[3] .. subject, id)
    else
      redis.call('hset', KEYS[3], subject, id)
      redis.call('zadd', KEYS[4], ARGV[2], id)
    end
  end
  if ARGV[1] ~= '' then redis.call('xack', KEYS[1], ARGV[1], id) end
end
return 1
"""

_CLAIM = """
-- KEYS: due, entries. ARGV: now ms, hide ms, count. Due events, hidden for `hide` ms.
local ids = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('zadd', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
  table.insert(out, id)
  table.insert(out, redis.call('hget', KEYS[2], id) or '')
end
return out
"""

_SETTLE = """
-- KEYS: due, entries, blocked, dead letters. ARGV: id, subject, held key, dead entry, now ms.
if not redis.call('zscore', KEYS[1], ARGV[1]) then return 0 end
if ARGV[4] ~= '' then redis.call('xadd', KEYS[4], '*', 'entry', ARGV[4]) end
redis.call('zrem', KEYS[1], ARGV[1])
redis.call('hdel', KEYS[2], ARGV[1])
local nxt = redis.call('lpop', ARGV[3])
if nxt then
  redis.call('hset', KEYS[3], ARGV[2], nxt)
  redis.call('zadd', KEYS[1], ARGV[5], nxt)
else
  redis.call('hdel', KEYS[3], ARGV[2])
end
return 1
"""

_SETTLE_MANY = """
-- KEYS: due, entries, blocked. ARGV: now ms, held prefix, (id, subject)...
-- Delivered events leave the queue; the next event of each subject becomes due.
local done = 0
for i = 3, #ARGV, 2 do
  local id, subject = ARGV[i], ARGV[i + 1]
  if redis.call('zscore', KEYS[1], id) then
    redis.call('zrem', KEYS[1], id)
    redis.call('hdel', KEYS[2], id)
    local nxt = redis.call('lpop', ARGV[2] .. subject)
    if nxt then
      redis.call('hset', KEYS[3], subject, nxt)
      redis.call('zadd', KEYS[1], ARGV[1], nxt)
    else
      redis.call('hdel', KEYS[3], subject)
    end
    done = done + 1
  end
end
return done
"""

_RESCHEDULE = """
-- KEYS: due, entries. ARGV: id, next ms, payload.
if not redis.call('zscore', KEYS[1], ARGV[1]) then return 0 end
redis.call('zadd', KEYS[1], ARGV[2], ARGV[1])
redis.call('hset', KEYS[2], ARGV[1], ARGV[3])
return 1
"""

_REPLAY = """
-- KEYS: dead letters, entries, blocked, due.
-- ARGV: now ms, held prefix, (dead id, id, subject, payload)...
local moved = 0
for i = 3, #ARGV, 4 do
  if redis.call('xdel', KEYS[1], ARGV[i]) == 1 then
    local id, subject = ARGV[i + 1], ARGV[i + 2]
    redis.call('hset', KEYS[2], id, ARGV[i + 3])
    if redis.call('hexists', KEYS[3], subject) == 1 then
      redis.call('rpush', ARGV[2] .. subject, id)
    else
      redis.call('hset', KEYS[3], subject, id)
      redis.call('zadd', KEYS[4], ARGV[1], id)
    end
    moved = moved + 1
  end
end
return moved
"""


@dataclass
class Queued:
    """One event in a sink's queue."""

    id: str
    subject: str
    event: str
    feed: str
    course_id: str
    attempts: int = 0
    error: str | None = None

    def payload(self) -> str:
        """How the event is stored in the queue."""
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def load(cls, entry_id: str, payload: str) -> Queued:
        """An event back from the queue."""
        data: dict[str, Any] = json.loads(payload)
        data["id"] = entry_id
        return cls(**data)


@dataclass
class DeadLetter:
    """An event that ran out of tries, with its last error."""

    dead_id: str
    queued: Queued
    failed_at: str


class DeliveryQueue:
    """Redis access for one sink's queue, dead letters and disabled flag."""

    def __init__(self, redis: Redis, prefix: str, sink: str) -> None:
        self.redis = redis
        self.sink = sink
        self.outbox = keys.outbox(prefix)
        self.group = keys.sink_group(sink)
        self.due = keys.delivery_due(prefix, sink)
        self.entries = keys.delivery_entries(prefix, sink)
        self.blocked = keys.delivery_blocked(prefix, sink)
        self.held = keys.delivery_held_prefix(prefix, sink)
        self.dead = keys.dead_letters(prefix, sink)
        self.disabled_key = keys.sink_disabled(prefix, sink)
        self._enqueue = redis.register_script(_ENQUEUE)
        self._claim = redis.register_script(_CLAIM)
        self._settle = redis.register_script(_SETTLE)
        self._settle_many = redis.register_script(_SETTLE_MANY)
        self._reschedule = redis.register_script(_RESCHEDULE)
        self._replay = redis.register_script(_REPLAY)

    async def enqueue(self, events: Sequence[Queued], now_ms: int, *, ack: bool = True) -> None:
        """Queue events (acknowledging them in the outbox group in the same step)."""
        args: list[Any] = [self.group if ack else "", now_ms, self.held]
        for q in events:
            args += [q.id, q.subject, q.payload()]
        await self._enqueue(keys=[self.outbox, self.entries, self.blocked, self.due], args=args)

    async def ack(self, entry_ids: Sequence[str]) -> None:
        """Acknowledge outbox entries this sink does not want."""
        if entry_ids:
            await self.redis.xack(self.outbox, self.group, *entry_ids)

    async def claim(self, now_ms: int, hide_ms: int, count: int) -> list[Queued]:
        """Due events, hidden from other replicas for `hide_ms` while this one tries them."""
        flat = await self._claim(keys=[self.due, self.entries], args=[now_ms, hide_ms, count])
        pairs = zip(flat[0::2], flat[1::2], strict=True)
        return [Queued.load(_text(i), _text(p)) for i, p in pairs if p]

    async def delivered_many(self, done: Sequence[Queued], now_ms: int) -> int:
        """Remove delivered events; the next event of each subject becomes due at once."""
        if not done:
            return 0
        args: list[Any] = [now_ms, self.held]
        for q in done:
            args += [q.id, q.subject]
        settled = await self._settle_many(keys=[self.due, self.entries, self.blocked], args=args)
        return int(settled)

    async def dead_letter(self, q: Queued, failed_at: str, now_ms: int) -> bool:
        """Move an event that ran out of tries to the dead letters; its subject moves on."""
        entry = json.dumps({**json.loads(q.payload()), "failed_at": failed_at})
        return await self._done(q, entry, now_ms)

    async def _done(self, q: Queued, dead: str, now_ms: int) -> bool:
        done = await self._settle(
            keys=[self.due, self.entries, self.blocked, self.dead],
            args=[q.id, q.subject, self.held + q.subject, dead, now_ms],
        )
        return bool(done)

    async def retry_at(self, q: Queued, when_ms: int) -> bool:
        """Schedule the next try of an event (keeping its tries and last error)."""
        done = await self._reschedule(
            keys=[self.due, self.entries], args=[q.id, when_ms, q.payload()]
        )
        return bool(done)

    async def dead_letters(self, count: int = 10_000) -> list[DeadLetter]:
        """The sink's dead letters, oldest first."""
        result = []
        entries: Any = await self.redis.xrange(self.dead, count=count)
        for dead_id, fields in entries:
            data = json.loads(_text(fields[b"entry"]))
            failed_at = data.pop("failed_at", "")
            entry_id = data.pop("id")
            result.append(DeadLetter(_text(dead_id), Queued(id=entry_id, **data), failed_at))
        return result

    async def replay(self, letters: Sequence[DeadLetter], now_ms: int) -> int:
        """Put dead letters back in the queue with fresh tries; returns how many moved."""
        args: list[Any] = [now_ms, self.held]
        for letter in letters:
            fresh = Queued(**{**letter.queued.__dict__, "attempts": 0, "error": None})
            args += [letter.dead_id, fresh.id, fresh.subject, fresh.payload()]
        moved = await self._replay(
            keys=[self.dead, self.entries, self.blocked, self.due], args=args
        )
        return int(moved)

    async def disabled(self) -> str | None:
        """Why the sink is disabled, or None."""
        reason = await self.redis.get(self.disabled_key)
        return None if reason is None else _text(reason)

    async def disable(self, reason: str) -> bool:
        """Stop deliveries to the sink until `replay` enables it; False if it already was."""
        return bool(await self.redis.set(self.disabled_key, reason, nx=True))

    async def enable(self) -> None:
        """Let deliveries to the sink go again."""
        await self.redis.delete(self.disabled_key)

    async def counts(self) -> dict[str, int]:
        """Queued (due or held) and retrying events, and dead letters."""
        queued = int(await self.redis.hlen(self.entries))
        retrying = 0
        for payload in (await self.redis.hvals(self.entries)) if queued < 10_000 else []:
            retrying += 1 if json.loads(_text(payload)).get("attempts") else 0
        return {
            "queued": queued,
            "retrying": retrying,
            "dead_lettered": int(await self.redis.xlen(self.dead)),
        }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
