"""What the console's pages show, read from Redis: recent events, dead letters, quarantine.

Everything read here came from outside (Absorb, receivers) and is treated as such:
an entry that does not parse still shows, with what could be read of it, and never
fails the page.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bridge import keys
from bridge.commands.dead_letters import describe
from bridge.delivery import DeliveryQueue
from bridge.store import Store

#: An outbox (stream) entry id, as links to events carry it.
_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
#: How many of the newest outbox entries a filtered list looks through.
SCAN_ENTRIES = 2000


@dataclass(frozen=True)
class EventFilter:
    """The recent-events page's filters; an empty one matches everything."""

    type: str = ""
    status: str = ""
    course: str = ""
    subject: str = ""

    def matches(self, row: dict[str, Any]) -> bool:
        """Whether an event's row passes every filter given."""
        return all(
            not wanted or row.get(name) == wanted
            for name, wanted in (
                ("type", self.type),
                ("status", self.status),
                ("course", self.course),
                ("subject", self.subject),
            )
        )


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _event_of(text: str) -> dict[str, Any]:
    try:
        event = json.loads(text)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def event_row(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """One outbox entry as a row of the recent-events table."""
    event = _event_of(fields.get("event", ""))
    return {
        "entry": entry_id,
        "id": fields.get("id") or event.get("id"),
        "type": fields.get("type") or event.get("type"),
        "subject": fields.get("subject") or event.get("subject"),
        "course": fields.get("course", ""),
        "feed": fields.get("feed", ""),
        "status": event.get("status"),
        "previous": event.get("previousstatus"),
        "time": event.get("time"),
    }


async def recent_events(
    redis: Redis, prefix: str, wanted: EventFilter, limit: int = 100
) -> tuple[list[dict[str, Any]], int]:
    """The newest outbox events that pass the filter, newest first, and how many were read."""
    entries: Any = await redis.xrevrange(keys.outbox(prefix), count=SCAN_ENTRIES)
    rows = []
    for entry_id, raw in entries:
        fields = {_text(k): _text(v) for k, v in raw.items()}
        row = event_row(_text(entry_id), fields)
        if wanted.matches(row):
            rows.append(row)
            if len(rows) >= limit:
                break
    return rows, len(entries)


async def outbox_event(redis: Redis, prefix: str, entry_id: str) -> dict[str, Any] | None:
    """One outbox entry with its whole CloudEvent pretty-printed; None when it is gone."""
    if not _ENTRY_ID.fullmatch(entry_id):
        return None  # not a stream id at all: Redis would refuse it, and nothing has it
    entries: Any = await redis.xrange(keys.outbox(prefix), min=entry_id, max=entry_id)
    if not entries:
        return None
    fields = {_text(k): _text(v) for k, v in entries[0][1].items()}
    return {**event_row(entry_id, fields), "json": pretty(fields.get("event", ""))}


def pretty(text: str) -> str:
    """An event's JSON indented for reading; text that is not JSON is shown as it is."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


async def dead_letter_rows(queue: DeliveryQueue, limit: int) -> list[dict[str, Any]]:
    """A sink's newest dead letters, as `dead-letters --json` prints them."""
    return [describe(letter) for letter in await queue.dead_letters(count=limit, newest=True)]


async def dead_letter(queue: DeliveryQueue, dead_id: str) -> dict[str, Any] | None:
    """One dead letter: what `dead-letters` says of it and its whole event."""
    for letter in await queue.dead_letters():
        if letter.dead_id == dead_id:
            return {**describe(letter), "json": pretty(letter.queued.event)}
    return None


async def quarantine_rows(store: Store, feed: str) -> list[dict[str, Any]]:
    """A feed's quarantined records: key, scope, kind, error, when, and the raw text."""
    rows = []
    for key, value in sorted((await store.quarantined(feed)).items()):
        entry = _event_of(value)
        rows.append(
            {
                "key": key,
                "scope": entry.get("scope", ""),
                "kind": entry.get("kind", ""),
                "error": entry.get("error", value if not entry else ""),
                "at": entry.get("at"),
                "raw": str(entry.get("raw", "")),
            }
        )
    return rows
