"""The sweep's hot path, from pages already fetched: records per second against a floor.

    .venv/bin/python -m bench.sweep_hot --records 100000 [--profile unchanged|changed] [--json]

Pages of 1000 simulated course enrollments are encoded as Absorb would send them;
each run decodes them and pushes them through the sweep's page step (read the
snapshots, skip the unchanged, validate and diff the rest, one atomic commit per
page) against a private redis-server. The floors, measured in the same run: the
same pages decoded with orjson and the same number of Redis reads pipelined per
page; for changed records, also one XADD per record in the same pipeline.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench.report import Row, emit
from bridge import logs
from bridge.absorb.client import RawPage
from bridge.feeds import FeedSpec, course_scope
from bridge.simulator.generate import TenantSpec, generate
from bridge.simulator.records import User
from bridge.simulator.simclock import SimClock
from bridge.store import Store
from bridge.sweep import Sweeper, _Run

PAGE = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pages_of(records: list[dict[str, Any]]) -> list[bytes]:
    """Absorb's page bodies, as bytes on the wire."""
    return [
        orjson.dumps({"totalItems": len(records), "returnedItems": len(chunk), "limit": PAGE,
                      "offset": n, "enrollments": chunk})
        for n, chunk in enumerate(records[i:i + PAGE] for i in range(0, len(records), PAGE))
    ]  # fmt: skip


async def floor(redis: aioredis.Redis, bodies: list[bytes], *, emit: bool = False) -> float:
    """Decode the pages and HGET each record pipelined; with `emit`, XADD each one too."""
    started = time.perf_counter()
    for body in bodies:
        items = orjson.loads(body)["enrollments"]
        pipe = redis.pipeline(transaction=False)
        for item in items:
            pipe.hget(f"floor:{item['id'][:2]}", item["id"])
            if emit:
                pipe.xadd("floor:stream", {"event": orjson.dumps(item)})
        await pipe.execute()
    return time.perf_counter() - started


async def sweep_pages(run: _Run, bodies: list[bytes]) -> float:
    started = time.perf_counter()
    for body in bodies:
        data = orjson.loads(body)
        page = RawPage(
            data["totalItems"], data["returnedItems"], PAGE, data["offset"], data["enrollments"]
        )
        await run._process(page.items, page)
    await run._settle()  # the last page's commit
    return time.perf_counter() - started


async def bench(redis_url: str, count: int, profile: str | None) -> list[Row]:
    users = max(1, count // 10)
    spec = TenantSpec(
        users=users, courses=10, enrollment_ratio=1.0, chapters_per_course=1, lessons_per_chapter=1
    )
    tenant = generate(spec, SimClock(), User("admin", "A", "B"))
    records = [ce.to_json() for ce in list(tenant.enrollments.values())[:count]]
    bodies = pages_of(records)
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushall()
    store = Store(redis, "hot")
    feed = FeedSpec(name="hot", resource="course_enrollments", emit_on_first_sync=True)
    scope = course_scope(feed, "c")
    token = await store.acquire(feed.name, scope.key, 600_000)
    assert token is not None
    sweeper = Sweeper(client=None, store=store, source="https://rest.myabsorb.com", page_size=PAGE)  # type: ignore[arg-type]
    run = _Run(sweeper, scope, token, full=False)
    run.buckets = max(1, len(records) // 64)
    run.baseline_done = True

    floor_s = await floor(redis, bodies)
    created_s = await sweep_pages(run, bodies)  # every record new: a created event each
    created = await store.outbox_length()
    profiler = _profiler() if profile == "unchanged" else None
    unchanged_s = await sweep_pages(run, bodies)
    _report(profiler)
    # Every record changes (a new status): a status_changed event each.
    for record in records:
        record["status"] = (record["status"] + 1) % 13
    bodies = pages_of(records)
    emit_floor_s = await floor(redis, bodies, emit=True)
    profiler = _profiler() if profile == "changed" else None
    changed_s = await sweep_pages(run, bodies)
    _report(profiler)
    changed = await store.outbox_length() - created
    await redis.aclose()
    n = len(records)
    unchanged = n / unchanged_s
    floor_rate = n / floor_s
    return [
        Row("sweep, unchanged records (pages already fetched)", unchanged, "records/s",
            floor_rate, "orjson + pipelined HGET", ">= 50,000 and >= 50% of floor",
            unchanged >= 50_000 and unchanged >= floor_rate / 2),
        Row("sweep, changed records (pages already fetched)", changed / changed_s, "events/s",
            n / emit_floor_s, "orjson + pipelined HGET + XADD", ">= 20,000",
            changed / changed_s >= 20_000),
        Row("sweep, new records (created events)", created / created_s, "events/s",
            n / emit_floor_s, "orjson + pipelined HGET + XADD"),
    ]  # fmt: skip


def _profiler() -> Any:
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="enabled")
    profiler.start()
    return profiler


def _report(profiler: Any) -> None:
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON line")
    parser.add_argument(
        "--profile", choices=("unchanged", "changed"), help="print a pyinstrument profile of a pass"
    )
    args = parser.parse_args()
    logs.configure(level="warning")
    redis_bin = shutil.which("redis-server") or sys.exit("redis-server is not installed")
    port, workdir = free_port(), Path(tempfile.mkdtemp())
    proc = subprocess.Popen([redis_bin, "--port", str(port), "--save", "", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(0.5)
        random.seed(1)
        rows = asyncio.run(bench(f"redis://127.0.0.1:{port}/0", args.records, args.profile))
        emit(rows, as_json=args.json)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
