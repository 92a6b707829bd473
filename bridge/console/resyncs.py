"""Resyncs started from the console: each runs apart from the request that started it.

A full resync of a feed of thousands of courses takes minutes under the request
budget, longer than a browser or a proxy waits for an answer. So the console
starts it, answers at once, and shows it running and then how it ended. One runs
per feed at a time; what ends it, an exception included, is logged and shown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from bridge import clock
from bridge.absorb.timefmt import format_rfc3339

log = structlog.get_logger(__name__)

Run = Callable[[], Awaitable[dict[str, int]]]


@dataclass
class Resync:
    """One resync of a feed: when it started, and once over, how it ended."""

    started: str
    who: str
    ended: str | None = None
    outcome: str | None = None
    failed: bool = False


@dataclass
class Resyncs:
    """The feeds' resyncs this process runs or ran last, one per feed."""

    last: dict[str, Resync] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def running(self, feed: str) -> bool:
        """Whether a resync of the feed is under way here."""
        task = self._tasks.get(feed)
        return task is not None and not task.done()

    def start(self, feed: str, run: Run, *, who: str) -> bool:
        """Start a resync of the feed unless one runs already; whether this call started one."""
        if self.running(feed):
            return False
        self.last[feed] = entry = Resync(started=format_rfc3339(clock.now()), who=who)
        self._tasks[feed] = asyncio.create_task(self._run(feed, run, entry))
        return True

    async def _run(self, feed: str, run: Run, entry: Resync) -> None:
        try:
            totals = await run()
        except Exception as e:  # the resync fails, never the console: it says why
            log.exception("console.resync_failed", feed=feed)
            entry.outcome, entry.failed = f"failed: {type(e).__name__}: {e}"[:500], True
        else:
            log.info("console.resync", feed=feed, who=entry.who, **totals)
            entry.outcome = summary(totals)
            entry.failed = totals["scopes"] != totals["of"]
        finally:
            entry.ended = format_rfc3339(clock.now())

    async def wait(self, feed: str) -> None:
        """Until the feed's resync, if one runs, has ended (however it ended)."""
        task = self._tasks.get(feed)
        if task is not None:
            await asyncio.wait([task])

    async def stop(self) -> None:
        """Cancel the resyncs still running (the bridge is stopping); idempotent."""
        running = {feed: t for feed, t in self._tasks.items() if not t.done()}
        for task in running.values():
            task.cancel()
        for feed, task in running.items():
            with contextlib.suppress(asyncio.CancelledError):
                await task
            entry = self.last[feed]
            entry.outcome, entry.failed = "stopped with the bridge", True
            entry.ended = entry.ended or format_rfc3339(clock.now())


def summary(totals: dict[str, int]) -> str:
    """What a resync did, in a line."""
    return (
        f"{totals['scopes']}/{totals['of']} scopes swept in full, "
        f"{totals['events']} events, {totals['quarantined']} still quarantined"
    )
