"""`absorb-bridge replay --sink NAME`: move a sink's dead letters back into its queue."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from bridge import clock
from bridge.absorb.timefmt import parse_datetime
from bridge.commands.wiring import Parts, connect, load, sink_named
from bridge.config import Config
from bridge.delivery import DeadLetter, DeliveryQueue
from bridge.durations import parse_duration


def replay(
    path_arg: str | None, sink: str, *, since: str | None = None, event_id: str | None = None
) -> int:
    """Replay all dead letters of a sink, or those since a time or with one event id.

    A sink disabled by a 410 is enabled again: replay is how an operator says the
    receiver is fixed.
    """
    config = load("replay", path_arg)
    if isinstance(config, int):
        return config
    if sink_named("replay", config, sink) is None:
        return 1
    try:
        cutoff = _cutoff(since)
    except ValueError as e:
        print(f"absorb-bridge replay: --since: {e}")
        return 1
    return asyncio.run(_replay(config, sink, cutoff, event_id))


def _cutoff(since: str | None) -> str | None:
    """`--since` as an RFC 3339 instant: a duration ago (`2h`) or a timestamp."""
    if since is None:
        return None
    try:
        moment = clock.now() - timedelta(seconds=parse_duration(since))
    except ValueError:
        moment = parse_datetime(since)
    return moment.isoformat()


def choose(letters: list[DeadLetter], cutoff: str | None, event_id: str | None) -> list[DeadLetter]:
    """The dead letters a replay with these filters takes."""
    chosen = []
    for letter in letters:
        if event_id is not None and _event_id(letter) != event_id:
            continue
        if cutoff is not None and parse_datetime(letter.failed_at) < parse_datetime(cutoff):
            continue
        chosen.append(letter)
    return chosen


def _event_id(letter: DeadLetter) -> str:
    return str(json.loads(letter.queued.event).get("id"))


async def _replay(config: Config, sink: str, cutoff: str | None, event_id: str | None) -> int:
    async with connect(config) as parts:
        moved, was_disabled = await replay_sink(parts, sink, cutoff=cutoff, event_id=event_id)
        note = " and enabled the sink again" if was_disabled else ""
        print(
            f"replay of {sink}: {moved} dead letter{'s' if moved != 1 else ''} queued again{note}"
        )
        return 0


async def replay_sink(
    parts: Parts,
    sink: str,
    *,
    cutoff: str | None = None,
    event_id: str | None = None,
    dead_id: str | None = None,
) -> tuple[int, bool]:
    """Queue a sink's dead letters again (all, or those chosen) and enable the sink.

    Returns how many moved and whether the sink had been disabled.
    """
    queue = DeliveryQueue(parts.redis, parts.store.prefix, sink)
    letters = choose(await queue.dead_letters(), cutoff, event_id)
    if dead_id is not None:
        letters = [letter for letter in letters if letter.dead_id == dead_id]
    moved = await queue.replay(letters, int(clock.now().timestamp() * 1000)) if letters else 0
    was_disabled = await queue.disabled() is not None
    await queue.enable()
    return moved, was_disabled
