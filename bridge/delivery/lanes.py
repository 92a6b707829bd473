"""Each sink's loops in the daemon: open the sink, then feed its queue and deliver, in lanes.

Opening retries until the sink and its consumer group are up; only then do its feed
loop and `SinkWorker.lanes` delivery loops start, each under the daemon's
`Supervisor`. A consumer group that is gone (Redis lost its data, or someone removed
it) is recreated from inside the failing step; the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import structlog
from redis.exceptions import RedisError, ResponseError

from bridge.delivery.worker import SinkWorker
from bridge.supervise import Supervisor

log = structlog.get_logger(__name__)

#: How long a sink's loop rests when it found nothing to feed or deliver.
IDLE_S = 0.1

#: Whether Redis lost the bridge's data since the last look (and recovery has run).
DataLost = Callable[[], Awaitable[bool]]


class DeliveryLanes:
    """Opens every sink and runs its feed and delivery loops until the daemon stops."""

    def __init__(
        self,
        workers: Sequence[SinkWorker],
        loops: Supervisor,
        stop: asyncio.Event,
        data_lost: DataLost,
    ) -> None:
        self.workers = list(workers)
        self.loops = loops
        self._stop = stop
        self._data_lost = data_lost
        self.opening: list[asyncio.Task[None]] = []
        self.delivering: list[asyncio.Task[None]] = []
        self._opened: list[SinkWorker] = []
        self._started: set[str] = set()

    def start(self) -> None:
        """Start each sink's opening loop; its delivery loops follow once it is open."""
        for worker in self.workers:
            name = worker.sink.name
            opening = self.loops.spawn(
                f"open:{name}",
                partial(self._open_step, worker),
                idle_s=IDLE_S,
                until_done=True,
                sink=name,
            )
            opening.add_done_callback(partial(self._opened_now, worker))
            self.opening.append(opening)

    async def drain(self) -> None:
        """Deliver what the opened sinks still have, until caught up (the caller bounds it)."""
        await asyncio.gather(*(self._drain(w) for w in self._opened))

    async def deliver_once(self) -> int:
        """Feed and deliver every sink until nothing more goes; returns the events delivered."""
        before = sum(w.delivered for w in self.workers)
        for worker in self.workers:
            while await worker.step():
                pass
        return sum(w.delivered for w in self.workers) - before

    async def close(self) -> None:
        """Give up each sink's feeder lease and close the sinks."""
        for worker in self.workers:
            with contextlib.suppress(RedisError):  # the feeder lease runs out by itself anyway
                await worker.release()
        for worker in self.workers:
            await worker.sink.close()

    async def _open_step(self, worker: SinkWorker) -> bool:
        """Open a sink (once, though creating its consumer group may need another try)."""
        if worker.sink.name not in self._started:
            await worker.sink.start()
            self._started.add(worker.sink.name)
        await worker.setup()
        return True

    def _opened_now(self, worker: SinkWorker, opening: asyncio.Task[None]) -> None:
        """Once a sink is open, its feed and each delivery lane repeat on their own.

        Redis runs one's script while this process prepares another's batch.
        """
        name = worker.sink.name
        if self._stop.is_set() or not self.loops.loops[f"open:{name}"].finished:
            return
        self._opened.append(worker)
        steps: list[tuple[str, Callable[[], Awaitable[int]]]] = [(f"feed:{name}", worker.feed_once)]
        steps += [(f"deliver:{name}:{n + 1}", worker.deliver_once) for n in range(worker.lanes)]
        for loop, step in steps:
            self.delivering.append(
                self.loops.spawn(loop, partial(self._step, worker, step), idle_s=IDLE_S, sink=name)
            )

    async def _step(self, worker: SinkWorker, step: Callable[[], Awaitable[int]]) -> int:
        try:
            return await step()
        except ResponseError as e:
            if "NOGROUP" in str(e):
                # The sink's consumer group is gone: Redis may have lost its data.
                await self._regroup(worker)
            raise

    async def _regroup(self, worker: SinkWorker) -> None:
        """A sink's consumer group is gone: recover all if Redis lost its data, else the group."""
        if not await self._data_lost():
            log.warning("sink.group_recreated", sink=worker.sink.name)
            await worker.setup()

    async def _drain(self, worker: SinkWorker) -> None:
        async def drain() -> None:
            while await worker.step():
                pass

        await self.loops.attempt(f"drain:{worker.sink.name}", drain, sink=worker.sink.name)
