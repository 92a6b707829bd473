"""Records swept per second and Redis bytes per tracked enrollment.

    .venv/bin/python bench/engine_sweep.py --enrollments 100000
    .venv/bin/python bench/engine_sweep.py --enrollments 1000000

Starts `absorb-bridge simulate` (its own process) and a private redis-server on
free loopback ports, then sweeps every course with the real client, store and
sweeper: a baseline (every record new), a full re-read (every record unchanged)
and an incremental sweep after live activity (changed records). Redis memory
is read from INFO before and after the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import redis.asyncio as aioredis

from bridge.absorb.client import AbsorbClient
from bridge.absorb.transport import AbsorbTransport, Credentials
from bridge.feeds import FeedSpec, Scope, course_scope
from bridge.store import Store
from bridge.sweep import Sweeper

CREDENTIALS = Credentials(api_key="bench", username="bench", password="bench")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"nothing listens on port {port} after {timeout_s:.0f}s")


def control(url: str, path: str, body: object) -> object:
    request = urllib.request.Request(
        f"{url}/_sim/{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=600) as reply:
        return json.load(reply)


async def sweep_all(
    sweeper: Sweeper, store: Store, scopes: list[Scope], *, full: bool
) -> tuple[int, float]:
    records, started = 0, time.perf_counter()
    for scope in scopes:
        token = await store.acquire(scope.feed.name, scope.key, 600_000)
        assert token is not None
        result = await sweeper.sweep(scope, token, full=full)
        records += result.records
    return records, time.perf_counter() - started


def rate(records: int, elapsed: float) -> str:
    return f"{records:>9,} records in {elapsed:6.1f} s = {records / elapsed:8,.0f} records/s"


async def bench(
    url: str, redis_url: str, courses: list[str], page_size: int, activity: int
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushall()
    before = int((await redis.info("memory"))["used_memory"])
    store = Store(redis, "bench")
    transport = AbsorbTransport(url, CREDENTIALS, max_requests_per_second=10_000, timeout_s=120)
    client = AbsorbClient(transport, page_size=page_size)
    feed = FeedSpec(name="bench", resource="course_enrollments", lookback_s=0)
    scopes = [course_scope(feed, c) for c in courses]
    sweeper = Sweeper(client, store, source=url, page_size=page_size)

    records, elapsed = await sweep_all(sweeper, store, scopes, full=False)
    after = int((await redis.info("memory"))["used_memory"])
    per = (after - before) / records
    print(f"baseline (every record new):   {rate(records, elapsed)}")
    print(f"redis memory: {after - before:,} bytes, {per:.1f} bytes per tracked enrollment")
    buckets = [k async for k in redis.scan_iter("bench:snap:*", count=1000)]
    encodings: dict[str, int] = {}
    for key in buckets[:200]:
        encoding = (await redis.object("encoding", key)).decode()
        encodings[encoding] = encodings.get(encoding, 0) + 1
    print(f"  {len(buckets):,} snapshot buckets; encodings of a sample: {encodings}")

    records, elapsed = await sweep_all(sweeper, store, scopes, full=True)
    print(f"full re-read (all unchanged):  {rate(records, elapsed)}")

    result = control(url, "activity/steps", {"steps": activity})
    records, elapsed = await sweep_all(sweeper, store, scopes, full=False)
    events = await store.outbox_length()
    print(f"incremental after {activity:,} activity steps ({result}):")
    print(f"  {events:,} events from {rate(records, elapsed)}")
    await client.close()
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enrollments", type=int, default=100_000)
    parser.add_argument("--courses", type=int, default=40)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--activity", type=int, default=20_000)
    args = parser.parse_args()
    users = max(1, round(args.enrollments / args.courses / 0.5))
    sim_port, redis_port = free_port(), free_port()
    workdir = Path(tempfile.mkdtemp())
    redis_bin = shutil.which("redis-server") or sys.exit("redis-server is not installed")
    simulate = [
        sys.executable, "-m", "bridge", "--log-level", "warning", "simulate",
        "--port", str(sim_port), "--api-key", "bench", "--username", "bench",
        "--password", "bench", "--users", str(users), "--courses", str(args.courses),
        "--enrollment-ratio", "0.5", "--chapters-per-course", "1", "--lessons-per-chapter", "1",
        "--sessions-per-ilc", "1", "--fault", "rate_limit_per_s=100000",
    ]  # fmt: skip
    redis_cmd = [redis_bin, "--port", str(redis_port), "--save", "", "--dir", str(workdir)]
    procs = [
        subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL),
        subprocess.Popen(simulate, stdout=subprocess.DEVNULL),
    ]
    try:
        started = time.perf_counter()
        wait_port(redis_port, 30)
        wait_port(sim_port, 3600)
        ready_s = time.perf_counter() - started
        print(f"simulated tenant of ~{args.enrollments:,} enrollments ready in {ready_s:.0f} s")
        url = f"http://127.0.0.1:{sim_port}"
        with urllib.request.urlopen(f"{url}/_sim/tenant?limit=0", timeout=600) as reply:
            courses = [c["id"] for c in json.load(reply)["courses"]]
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        asyncio.run(bench(url, redis_url, courses, args.page_size, args.activity))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
