"""`absorb-bridge dead-letters --sink NAME`: a sink's dead letters, newest first."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bridge.commands.wiring import connect, load, sink_named
from bridge.config import Config
from bridge.delivery import DeadLetter, DeliveryQueue


def dead_letters(path_arg: str | None, sink: str, *, limit: int = 50, as_json: bool = False) -> int:
    """Print up to `limit` dead letters of a sink: id, type, subject, tries, last error, when."""
    config = load("dead-letters", path_arg)
    if isinstance(config, int):
        return config
    if sink_named("dead-letters", config, sink) is None:
        return 1
    rows = asyncio.run(_read(config, sink, limit))
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(render(sink, rows))
    return 0


async def _read(config: Config, sink: str, limit: int) -> list[dict[str, Any]]:
    async with connect(config) as parts:
        queue = DeliveryQueue(parts.redis, parts.store.prefix, sink)
        return [describe(letter) for letter in await queue.dead_letters(count=limit, newest=True)]


def describe(letter: DeadLetter) -> dict[str, Any]:
    """What an operator needs of one dead letter; an event that is not JSON still shows."""
    try:
        event = json.loads(letter.queued.event)
    except ValueError:
        event = {}
    if not isinstance(event, dict):
        event = {}
    return {
        "id": event.get("id"),
        "type": event.get("type"),
        "subject": event.get("subject") or letter.queued.subject,
        "tries": letter.queued.attempts,
        "last_error": letter.queued.error,
        "failed_at": letter.failed_at,
        "dead_letter_id": letter.dead_id,
    }


def render(sink: str, rows: list[dict[str, Any]]) -> str:
    """The dead letters as a table, the last error in full on its own line."""
    if not rows:
        return f"sink {sink}: no dead letters"
    lines = [f"sink {sink}: {len(rows)} dead letter{'' if len(rows) == 1 else 's'}, newest first"]
    lines.append(f"  {'when':<26} {'type':<40} {'subject':<38} {'tries':>5}  id")
    for row in rows:
        lines.append(
            f"  {row['failed_at'] or '-':<26} {row['type'] or '-':<40} "
            f"{row['subject'] or '-':<38} {row['tries']:>5}  {row['id'] or '-'}"
        )
        lines.append(f"      last error: {row['last_error'] or '-'}")
    return "\n".join(lines)
