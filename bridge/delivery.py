"""Moving events from the outbox to one sink, in outbox order, acknowledging only delivered ones.

Each sink reads the outbox through its own consumer group, so a slow or broken
sink holds back no other. An entry is acknowledged only after the sink took it;
until then it stays pending and is tried again, before anything newer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bridge import keys
from bridge.routes import Route, sinks_for
from bridge.sinks.base import Sink, SinkError

log = structlog.get_logger(__name__)

Entry = tuple[str, dict[str, str]]


class Deliverer:
    """Delivers the outbox to one sink; `deliver_once()` is one step of the loop."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        sink: Sink,
        routes: Sequence[Route],
        *,
        consumer: str,
        batch: int = 100,
        claim_idle_ms: int = 60_000,
    ) -> None:
        self.redis = redis
        self.stream = keys.outbox(prefix)
        self.group = keys.sink_group(sink.name)
        self.sink = sink
        self.routes = routes
        self.consumer = consumer
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.last_error: str | None = None

    async def setup(self) -> None:
        """Create the sink's consumer group at the start of the outbox if it is new."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def deliver_once(self, block_ms: int | None = None) -> int:
        """Deliver what is pending, then what is new; returns how many entries were settled.

        Stops at the first failure, leaving that entry and everything after it pending
        so the next call starts from it again.
        """
        await self._claim_abandoned()
        settled = 0
        for start in ("0", ">"):
            entries = await self._read(start, block_ms if start == ">" else None)
            for entry_id, fields in entries:
                if not await self._deliver(entry_id, fields):
                    return settled
                settled += 1
            if start == "0" and len(entries) == self.batch:
                return settled  # more pending than one batch: keep draining it first
        return settled

    async def _read(self, start: str, block_ms: int | None) -> list[Entry]:
        reply: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=self.batch, block=block_ms
        )
        if not reply:
            return []
        # RESP2 shape: [[stream, [(id, fields), ...]]]; deleted entries come back with no fields.
        entries = reply[0][1]
        return [(_text(i), {_text(k): _text(v) for k, v in f.items()}) for i, f in entries if f]

    async def _claim_abandoned(self) -> None:
        # Entries another replica read and never acknowledged (it died): take them over.
        await self.redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            self.claim_idle_ms,
            start_id="0-0",
            count=self.batch,
        )

    async def _deliver(self, entry_id: str, fields: dict[str, str]) -> bool:
        event: dict[str, Any] = json.loads(fields["event"])
        wanted = sinks_for(
            self.routes, event, feed=fields.get("feed", ""), course_id=fields.get("course", "")
        )
        if self.sink.name in wanted:
            try:
                await self.sink.send(event, fields["event"])
            except SinkError as e:
                self.last_error = str(e)
                log.warning("delivery.failed", sink=self.sink.name, id=event["id"], error=str(e))
                return False
            log.debug("delivery.sent", sink=self.sink.name, id=event["id"])
        await self.redis.xack(self.stream, self.group, entry_id)
        return True

    async def backlog(self) -> dict[str, int]:
        """This sink's backlog (see `backlog`)."""
        return await backlog(self.redis, self.stream, self.group)


async def backlog(redis: Redis, stream: str, group: str) -> dict[str, int]:
    """Entries a sink has not read yet (`lag`) and read but not acknowledged (`pending`)."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:
        return {"lag": 0, "pending": 0}
    for info in groups:
        if _text(info["name"]) == group:
            return {"lag": int(info.get("lag") or 0), "pending": int(info["pending"])}
    return {"lag": 0, "pending": 0}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
