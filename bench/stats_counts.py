"""How long the stats loop takes to count a sink's retrying events, next to reading them all.

    .venv/bin/python -m bench.stats_counts [--events 20000] [--json]

Starts a private redis-server, queues `--events` events for a sink whose receiver
refuses every one (so each is retrying, with its error, on a schedule far ahead),
then times `DeliveryQueue.counts()` (one SCARD of the retrying set) against the
way it counted before: every queued event read back and parsed for its tries.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import redis.asyncio as aioredis

from bench.delivery import fill, free_port, make_events
from bench.report import Row, emit
from bridge import logs
from bridge.delivery import Circuit, DeliveryQueue, SinkWorker
from bridge.delivery.queue import Queued
from bridge.routes import Route
from bridge.sinks.base import Delivery, SinkError
from bridge.store import Store

T = TypeVar("T")

#: The target: counting takes no longer as the queue grows.
TARGET_MS = 5.0


class Refusing:
    """A sink whose receiver answers every event with an error."""

    name = "refusing"

    async def start(self) -> None:
        """Nothing to open."""

    async def send(self, delivery: Delivery) -> None:
        """Refuse the event."""
        raise SinkError(self.name, "the receiver answered HTTP 503")

    async def close(self) -> None:
        """Nothing to close."""


async def queue_retrying(redis: aioredis.Redis, count: int) -> DeliveryQueue:
    """A sink's queue holding `count` events, each failed once and waiting for its retry."""
    store = Store(redis, "bench-stats")
    await fill(store, make_events(count, subjects=count))
    worker = SinkWorker(
        redis, store.prefix, Refusing(), [Route(sinks=("refusing",))], consumer="bench",
        schedule=(0.0, 3600.0), max_in_flight=256, circuit=Circuit(threshold=10**9),
    )  # fmt: skip
    await worker.setup()
    while await worker.feed_once():
        pass
    while worker.failed < count:
        await worker.deliver_once()
    return worker.queue


async def counted_by_reading(queue: DeliveryQueue) -> int:
    """The count as it was made before: every queued event read and parsed for its tries."""
    payloads = await queue.redis.hvals(queue.entries)
    return sum(1 for payload in payloads if Queued.load("", payload).attempts)


async def median_ms(step: Callable[[], Awaitable[T]], rounds: int) -> tuple[float, T]:
    """The median time of `rounds` calls of `step`, and its last result."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        result = await step()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


async def run(redis_url: str, events: int, rounds: int = 20) -> list[Row]:
    """Queue the events, time both ways of counting, check they agree."""
    redis = aioredis.Redis.from_url(redis_url)
    try:
        queue = await queue_retrying(redis, events)
        counts_ms, counts = await median_ms(queue.counts, rounds)
        reading_ms, read = await median_ms(lambda: counted_by_reading(queue), rounds)
    finally:
        await redis.aclose()
    assert counts["retrying"] == read == events, (counts, read)
    return [
        Row(
            name=f"count a sink's retrying events ({events:,} queued, all retrying)",
            value=counts_ms,
            unit="ms",
            floor=reading_ms,
            floor_is="reading and parsing every queued event, as before",
            target=f"<= {TARGET_MS:g} ms, whatever the queue's length",
            met=counts_ms <= TARGET_MS,
        )
    ]


def main() -> None:
    """Parse the arguments, start a private redis-server, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON line")
    args = parser.parse_args()
    logs.configure(level="error", json=True)  # 20,000 refusals would be 20,000 warnings
    redis_bin = shutil.which("redis-server") or sys.exit("redis-server is not installed")
    port, workdir = free_port(), Path(tempfile.mkdtemp())
    proc = subprocess.Popen(
        [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        rows = asyncio.run(run(f"redis://127.0.0.1:{port}/0", args.events))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    emit(rows, as_json=args.json)


if __name__ == "__main__":
    main()
