"""Events delivered per second to a local HTTP receiver and to a Redis stream.

    .venv/bin/python bench/delivery.py --events 20000

Starts a private redis-server, fills the outbox, then times feed + deliver until
every event is confirmed: by an in-process aiohttp receiver answering 204 (the
http sink, signed), and by XADD to a Redis stream (the redis_stream sink).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web

from bridge.config import HttpSinkConfig, RedisStreamSinkConfig
from bridge.delivery import Circuit, SinkWorker
from bridge.routes import Route
from bridge.sinks.base import Sink
from bridge.sinks.http import HttpSink
from bridge.sinks.redis_stream import RedisStreamSink
from bridge.store import Commit, OutboxEvent, Store

SECRET = "whsec_" + base64.b64encode(b"bench-secret-bench-secret").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fill(store: Store, count: int, subjects: int) -> None:
    token = await store.acquire("bench", "outbox", 600_000)
    assert token is not None
    for start in range(0, count, 1000):
        events = []
        for n in range(start, min(count, start + 1000)):
            event = {
                "specversion": "1.0", "id": f"{n:032x}", "source": "https://rest.myabsorb.com",
                "type": "absorb.course_enrollment.status_changed",
                "subject": f"00000000-0000-4000-8000-{n % subjects:012d}",
                "time": "2026-01-01T00:00:00Z", "datacontenttype": "application/json",
                "status": "Complete", "previousstatus": "InProgress",
                "data": {"current": {"id": n, "status": 3}, "previous": {"status": 1},
                         "changed": ["status"]},
            }  # fmt: skip
            body = json.dumps(event, separators=(",", ":"))
            events.append(
                OutboxEvent(event["id"], event["subject"], event["type"], "bench", "", body)
            )
        await store.commit("bench", "outbox", token, Commit(events=events))


async def run_sink(
    redis: aioredis.Redis, sink: Sink, count: int, subjects: int, in_flight: int
) -> float:
    store = Store(redis, f"bench-{sink.name}")
    await fill(store, count, subjects)
    worker = SinkWorker(
        redis, store.prefix, sink, [Route(sinks=(sink.name,))], consumer="bench",
        max_in_flight=in_flight, circuit=Circuit(threshold=10**9), batch=1000,
    )  # fmt: skip
    await worker.setup()
    await sink.start()
    started = time.perf_counter()
    while worker.delivered < count:
        fed = await worker.feed_once()
        sent = await worker.deliver_once()
        if not fed and not sent:
            await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    await sink.close()
    return elapsed


async def bench(redis_url: str, count: int, subjects: int, in_flight: int) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    received = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    http = HttpSink(HttpSinkConfig.model_validate(
        {"name": "http", "type": "http", "url": f"http://127.0.0.1:{port}/hook", "secret": SECRET,
         "max_in_flight": in_flight}
    ))  # fmt: skip
    elapsed = await run_sink(redis, http, count, subjects, in_flight)
    rate = count / elapsed
    print(
        f"http sink (signed, local receiver): {count:,} events in {elapsed:.1f} s = {rate:,.0f}/s"
    )
    print(f"  ({subjects:,} subjects, {in_flight} in flight)")
    await runner.cleanup()
    stream = RedisStreamSink(
        RedisStreamSinkConfig.model_validate(
            {"name": "stream", "type": "redis_stream", "stream": "bench-target"}
        ),
        redis_url,
    )
    elapsed = await run_sink(redis, stream, count, subjects, in_flight)
    rate = count / elapsed
    print(
        f"redis_stream sink:                  {count:,} events in {elapsed:.1f} s = {rate:,.0f}/s"
    )
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--subjects", type=int, default=2_000)
    parser.add_argument("--in-flight", type=int, default=32)
    args = parser.parse_args()
    redis_bin = shutil.which("redis-server") or sys.exit("redis-server is not installed")
    port, workdir = free_port(), Path(tempfile.mkdtemp())
    proc = subprocess.Popen(
        [redis_bin, "--port", str(port), "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        asyncio.run(
            bench(f"redis://127.0.0.1:{port}/0", args.events, args.subjects, args.in_flight)
        )
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
