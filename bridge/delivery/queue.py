"""A sink's delivery queue in Redis: one event per subject at the front, the rest held behind.

Events leave the outbox into the queue atomically with their acknowledgement, so
the outbox can be trimmed and a crash loses nothing. One replica at a time feeds
a sink's queue (it holds the sink's feeder lease), so events enter the queue in
outbox order however many replicas run and whenever one dies. Only the oldest queued
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

import orjson
from redis.asyncio import Redis

from bridge import keys
from bridge.delivery import scripts
from bridge.packing import pack, unpack


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
        """How the event is stored in the queue: its details as JSON, a newline, the event.

        The event's JSON text stays as it is, so neither the scripts nor the worker
        escape and unescape it on every step; compact JSON has no raw newline, so the
        first newline always ends the details.
        """
        meta = {k: v for k, v in self.__dict__.items() if k not in ("id", "event")}
        return f"{orjson.dumps(meta).decode()}\n{self.event}"

    @classmethod
    def load(cls, entry_id: str, payload: str | bytes) -> Queued:
        """An event back from the queue."""
        text = payload.decode() if isinstance(payload, bytes) else payload
        meta, newline, event = text.partition("\n")
        data: dict[str, Any] = orjson.loads(meta)
        if newline:
            data["event"] = event
        # else: one JSON object with the event inside, as queues written before held them
        data["id"] = entry_id
        return cls(**data)


@dataclass(frozen=True)
class OutboxEntry:
    """An outbox entry read for routing: what the routes look at."""

    id: str
    feed: str
    course_id: str
    event: str


#: The one consumer name a sink's feeder reads the outbox under, whichever replica it is.
FEEDER = "feeder"


@dataclass(frozen=True)
class Fed:
    """What one feed step read: how many entries, under which feeder token, and those
    returned for routing. No token while another replica feeds the sink."""

    read: int
    token: str | None
    entries: list[OutboxEntry]


@dataclass
class DeadLetter:
    """An event that ran out of tries, with its last error."""

    dead_id: str
    queued: Queued
    failed_at: str


class DeliveryQueue:
    """Redis access for one sink's queue, dead letters and disabled flag."""

    def __init__(
        self, redis: Redis, prefix: str, sink: str, *, max_dead_letters: int | None = None
    ) -> None:
        self.redis = redis
        self.sink = sink
        self.max_dead_letters = max_dead_letters
        self.outbox = keys.outbox(prefix)
        self.group = keys.sink_group(sink)
        self.due = keys.delivery_due(prefix, sink)
        self.entries = keys.delivery_entries(prefix, sink)
        self.retrying = keys.delivery_retrying(prefix, sink)
        self.blocked = keys.delivery_blocked(prefix, sink)
        self.held = keys.delivery_held_prefix(prefix, sink)
        self.dead = keys.dead_letters(prefix, sink)
        self.disabled_key = keys.sink_disabled(prefix, sink)
        self.feeder = keys.sink_feeder(prefix, sink)
        self.seen = keys.sinks_seen(prefix)
        self.dropped = keys.dropped(prefix)
        self._feed = redis.register_script(scripts.FEED)
        self._route = redis.register_script(scripts.ROUTE)
        self._claim = redis.register_script(scripts.CLAIM)
        self._settle = redis.register_script(scripts.SETTLE)
        self._settle_many = redis.register_script(scripts.SETTLE_MANY)
        self._reschedule = redis.register_script(scripts.RESCHEDULE)
        self._replay = redis.register_script(scripts.REPLAY)
        self._release = redis.register_script(scripts.RELEASE)

    async def feed(
        self, owner: str, count: int, now_ms: int, lease_ms: int, *, take_all: bool
    ) -> Fed:
        """Read outbox entries if `owner` holds (or can take) the sink's feeder lease.

        The feeder's pending entries come first (a feeder died before queueing them),
        else new ones. With `take_all` they are queued and acknowledged in the same
        step; otherwise they are returned for routing (and stay pending until `route`
        settles them under the same token).
        """
        reply = await self._feed(
            keys=[self.outbox, self.entries, self.blocked, self.due, self.feeder, self.seen],
            args=[
                self.group, now_ms, self.held, FEEDER, count, "all" if take_all else "",
                owner, lease_ms,
            ],
        )  # fmt: skip
        if int(reply[0]) < 0:
            return Fed(0, None, [])
        token = _text(reply[1])
        if take_all:
            return Fed(int(reply[0]), token, [])
        values = unpack(reply[2], reply[3])
        # An entry trimmed away before it was read comes back without an event.
        entries = [
            OutboxEntry(*(value.decode() for value in values[i : i + 4]))
            for i in range(0, len(values), 4)
        ]
        return Fed(int(reply[0]), token, entries)

    async def route(
        self, token: str, wanted: Sequence[str], unwanted: Sequence[str], now_ms: int
    ) -> bool:
        """Queue the entries this sink wants and acknowledge the rest, in one step; False
        (and nothing done) when `token` no longer holds the feeder lease."""
        if not (wanted or unwanted):
            return True
        done = await self._route(
            keys=[self.outbox, self.entries, self.blocked, self.due, self.feeder],
            args=[self.group, now_ms, self.held, " ".join(wanted), " ".join(unwanted), token],
        )
        return bool(done)

    async def release(self, token: str) -> None:
        """Give up the feeder lease so another replica feeds the sink at once."""
        await self._release(keys=[self.feeder], args=[token])

    async def claim(self, now_ms: int, hide_ms: int, count: int) -> list[Queued]:
        """Due events, hidden from other replicas for `hide_ms` while this one tries them.

        None while the sink is disabled.
        """
        lengths, blob = await self._claim(
            keys=[self.due, self.entries, self.disabled_key], args=[now_ms, hide_ms, count]
        )
        values = unpack(lengths, blob)
        return [Queued.load(values[i].decode(), values[i + 1]) for i in range(0, len(values), 2)]

    async def delivered_many(self, done: Sequence[Queued], now_ms: int) -> int:
        """Remove delivered events; the next event of each subject becomes due at once."""
        if not done:
            return 0
        lengths, blob = pack(value.encode() for q in done for value in (q.id, q.subject))
        settled = await self._settle_many(
            keys=[self.due, self.entries, self.blocked, self.retrying],
            args=[now_ms, self.held, lengths, blob],
        )
        return int(settled)

    async def dead_letter(self, q: Queued, failed_at: str, now_ms: int) -> tuple[bool, int]:
        """Move an event that ran out of tries to the dead letters; its subject moves on.

        Returns whether it was still queued, and how many of the oldest dead letters
        were dropped to keep the sink within `max_dead_letters`.
        """
        entry = json.dumps({**q.__dict__, "failed_at": failed_at})
        cap = "" if self.max_dead_letters is None else str(self.max_dead_letters)
        done, dropped = await self._settle(
            keys=[self.due, self.entries, self.blocked, self.dead, self.dropped, self.retrying],
            args=[q.id, q.subject, self.held + q.subject, entry, now_ms, cap, self.dropped_field],
        )
        return bool(done), int(dropped)

    @property
    def dropped_field(self) -> str:
        """The field of the dropped counts hash that counts this sink's dropped dead letters."""
        return f"dead_letters:{self.sink}"

    async def retry_at(self, q: Queued, when_ms: int) -> bool:
        """Schedule the next try of an event (keeping its tries and last error)."""
        done = await self._reschedule(
            keys=[self.due, self.entries, self.retrying], args=[q.id, when_ms, q.payload()]
        )
        return bool(done)

    async def dead_letters(self, count: int = 10_000, *, newest: bool = False) -> list[DeadLetter]:
        """The sink's dead letters, oldest first (or the newest `count`, newest first)."""
        result = []
        read = self.redis.xrevrange if newest else self.redis.xrange
        entries: Any = await read(self.dead, count=count)
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
        """Queued (due or held) and retrying events, dead letters, and those the cap dropped.

        Retrying events are counted from the set each retry adds its event to, so the
        stats loop reads no event to count them, however long the queue.
        """
        return {
            "queued": int(await self.redis.hlen(self.entries)),
            "retrying": int(await self.redis.scard(self.retrying)),
            "dead_lettered": int(await self.redis.xlen(self.dead)),
            "dead_letters_dropped": int(
                await self.redis.hget(self.dropped, self.dropped_field) or 0
            ),
        }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
