"""One shape for every loop of the daemon: run a step, survive anything, back off, go on.

A loop's step returns whether it did something: then it runs again at once;
otherwise the loop rests `idle_s`. Any exception a step raises is logged with the
loop's name and context, counted in `absorb_bridge_loop_errors_total{loop}`, and
followed by an exponential backoff (`backoff_s`) before the next try. Every step
that returns is a completed cycle: its time is kept here and in
`absorb_bridge_loop_last_cycle_timestamp_seconds{loop}`, which is how health tells a
quiet loop from one that is stuck (`Bounds`) or gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import structlog
from redis.exceptions import RedisError

from bridge import clock, metrics
from bridge.errors import BridgeError
from bridge.retry import backoff_s

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: The first pause after a failure; it doubles with each failure in a row.
BACKOFF_BASE_S = 0.5
#: The longest pause between tries while a step keeps failing.
BACKOFF_CAP_S = 15.0

#: Failures that are a dependency being down, not a bug: logged without a traceback.
_EXPECTED = (BridgeError, RedisError, OSError, TimeoutError)


@dataclass(frozen=True)
class Bounds:
    """How long a loop may go without completing a cycle before health says so.

    A loop expected to complete a cycle every `period_s` is stalled (the bridge is
    not ready) once it has not for max(`stall_floor_s`, `stall_factor` x period),
    and wedged (the process is not alive) once no step has ended, completed or
    failed, for max(`wedge_floor_s`, `wedge_factor` x period): a loop that keeps
    failing on a dependency that is down is stalled, not wedged.
    """

    stall_floor_s: float = 60.0
    stall_factor: float = 5.0
    wedge_floor_s: float = 600.0
    wedge_factor: float = 20.0

    def stall_after_s(self, period_s: float) -> float:
        """Seconds without a cycle after which a loop is stalled."""
        return max(self.stall_floor_s, self.stall_factor * period_s)

    def wedge_after_s(self, period_s: float) -> float:
        """Seconds without a step ending after which a loop is wedged."""
        return max(self.wedge_floor_s, self.wedge_factor * period_s)


@dataclass
class Loop:
    """What health knows of one loop."""

    name: str
    #: How often a cycle should complete when all is well: its rest between steps.
    period_s: float
    started_at: float
    last_cycle_at: float | None = None
    #: When a step last ended, completed or failed: a loop that keeps failing is not stuck.
    last_step_at: float | None = None
    last_error: str = ""
    failures: int = 0
    task: asyncio.Task[None] | None = None
    #: Set when a loop that runs until done is done: its end is no death.
    finished: bool = False
    #: Ends the loop (the bridge's stop, unless the loop has its own).
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def quiet_for(self, now: float) -> float:
        """Seconds since its last completed cycle (since it started, before the first)."""
        return now - (self.started_at if self.last_cycle_at is None else self.last_cycle_at)

    def stuck_for(self, now: float) -> float:
        """Seconds since a step last ended, whether it completed or failed."""
        return now - (self.started_at if self.last_step_at is None else self.last_step_at)


class Supervisor:
    """Runs the daemon's loops in the one shape and keeps what health needs to know of them."""

    def __init__(self, stop: asyncio.Event, bounds: Bounds | None = None) -> None:
        self.stop = stop
        self.bounds = bounds or Bounds()
        self.loops: dict[str, Loop] = {}

    def spawn(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        *,
        idle_s: float,
        until_done: bool = False,
        rest_first: bool = False,
        watched: bool = True,
        stop: asyncio.Event | None = None,
        **context: object,
    ) -> asyncio.Task[None]:
        """Run `step` as the loop `name` in a task of its own, and see it if it dies.

        With `until_done` the loop ends once a step returns something true; with
        `rest_first` it rests `idle_s` before its first step. A `watched` loop is one
        health judges; `stop` (default: the bridge's) ends it.
        """
        loop = Loop(name, idle_s, clock.monotonic())
        loop.stop = self.stop if stop is None else stop
        if watched:
            self.loops[name] = loop
        runner = self._run(
            loop, step, idle_s=idle_s, until_done=until_done, rest_first=rest_first, **context
        )
        (task := asyncio.create_task(runner, name=name)).add_done_callback(
            partial(self._ended, loop)
        )
        loop.task = task
        return task

    async def _run(
        self,
        loop: Loop,
        step: Callable[[], Awaitable[object]],
        *,
        idle_s: float,
        until_done: bool = False,
        rest_first: bool = False,
        **context: object,
    ) -> None:
        """The loop shape: step, rest when idle, back off after an error, until stopped."""
        if rest_first:
            await _rest(loop.stop, idle_s)
        while not loop.stop.is_set():
            try:
                outcome = await step()
            except Exception as e:
                self._failed(loop.name, loop, e, context)
                pause = backoff_s(
                    loop.failures, base_s=BACKOFF_BASE_S, cap_s=BACKOFF_CAP_S, jitter=False
                )
            else:
                self._completed(loop)
                if until_done and outcome:
                    loop.finished = True
                    return
                if outcome:
                    await asyncio.sleep(0)  # busy: go again, but let the others run
                    continue
                pause = idle_s
            await _rest(loop.stop, pause)

    async def attempt(
        self, name: str, step: Callable[[], Awaitable[T]], **context: object
    ) -> T | None:
        """Run one piece of a loop's work; any exception is logged and counted, and gives None."""
        try:
            return await step()
        except Exception as e:
            self._failed(name, None, e, context)
            return None

    def stalled(self) -> dict[str, str]:
        """Loops that have not completed a cycle within their stall bound, with why."""
        now = clock.monotonic()
        return {
            loop.name: _quiet(loop, now)
            for loop in self.loops.values()
            if not loop.finished and loop.quiet_for(now) > self.bounds.stall_after_s(loop.period_s)
        }

    def dead(self) -> dict[str, str]:
        """Loops whose task ended while the bridge was not stopping, or whose step is stuck."""
        now = clock.monotonic()
        found: dict[str, str] = {}
        for loop in self.loops.values():
            if loop.finished or loop.stop.is_set():
                continue
            if loop.task is not None and loop.task.done():
                found[loop.name] = f"ended ({_end_of(loop.task)})"
            elif loop.stuck_for(now) > self.bounds.wedge_after_s(loop.period_s):
                found[loop.name] = f"wedged: its step has not ended for {loop.stuck_for(now):.0f}s"
        return found

    def _completed(self, loop: Loop) -> None:
        loop.last_cycle_at = loop.last_step_at = clock.monotonic()
        loop.failures = 0
        loop.last_error = ""
        metrics.LOOP_LAST_CYCLE.labels(loop.name).set(clock.now().timestamp())

    def _failed(
        self, name: str, loop: Loop | None, error: Exception, context: dict[str, object]
    ) -> None:
        text = f"{type(error).__name__}: {error}"[:500]
        failures = 1
        if loop is not None:
            loop.failures += 1
            loop.last_step_at = clock.monotonic()
            loop.last_error = text
            failures = loop.failures
        metrics.LOOP_ERRORS.labels(name).inc()
        log.error(
            "loop.failed",
            loop=name,
            error=text,
            failures=failures,
            exc_info=not isinstance(error, _EXPECTED),
            **context,
        )

    def _ended(self, loop: Loop, task: asyncio.Task[None]) -> None:
        """Every loop's end is seen: one that ends while the bridge runs is dead, and says why."""
        if loop.finished or loop.stop.is_set():
            return
        log.error("loop.dead", loop=loop.name, reason=_end_of(task), last_error=loop.last_error)


async def _rest(stop: asyncio.Event, pause_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), pause_s)


def _quiet(loop: Loop, now: float) -> str:
    what = "no cycle completed" if loop.last_cycle_at is None else "last cycle completed"
    text = f"{what} {loop.quiet_for(now):.0f}s ago"
    return f"{text}; last error: {loop.last_error}" if loop.last_error else text


def _end_of(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return "cancelled"
    error = task.exception()
    return "returned" if error is None else f"{type(error).__name__}: {error}"[:500]
