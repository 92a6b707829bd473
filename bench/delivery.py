"""Events delivered per second to a local HTTP receiver and to a Redis stream, next to floors.

    .venv/bin/python bench/delivery.py --events 20000 [--json]

Starts a private redis-server and a webhook receiver in a process of its own (it
verifies every Standard Webhooks signature and answers 204), fills the outbox,
then times the delivery core (feed and deliver overlapped, as the daemon runs
them) until every event is confirmed: by the receiver (the http sink, signed) and
by XADD (the redis_stream sink). Each figure stands next to a floor measured in
the same run, so their ratio holds on a busy machine:

- http: the same signed bodies POSTed with aiohttp at the same concurrency, no Redis;
- redis_stream: the same stream entries XADDed in pipelines of the same size, no queue.

`--json` prints the rows as one JSON line instead (a list of {"name", "value",
"unit", "floor", "floor_is", "target", "met"}), which `bench/run_all.py` collects.
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
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from bridge import logs
from bridge.config import HttpSinkConfig, RedisStreamSinkConfig
from bridge.delivery import Circuit, SinkWorker
from bridge.delivery.worker import MAX_BATCH
from bridge.routes import Route
from bridge.sinks.base import Delivery, Sink
from bridge.sinks.http import HttpSink
from bridge.sinks.redis_stream import RedisStreamSink
from bridge.store import Commit, OutboxEvent, Store

SECRET = "whsec_" + base64.b64encode(b"bench-secret-bench-secret").decode()
#: The targets on the 2-core project machine, events per second.
HTTP_TARGET = 5_000
STREAM_TARGET = 20_000


@dataclass(frozen=True)
class Row:
    """One figure, with its floor measured in the same run and its target.

    The fields of `bench/report.py`'s rows, so `bench/run_all.py` reads `--json`;
    kept here so this file also runs on its own (`python bench/delivery.py`).
    """

    name: str
    value: float
    unit: str
    floor: float
    #: What the floor measures.
    floor_is: str
    target: str
    met: bool


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_events(count: int, subjects: int) -> list[dict[str, object]]:
    """Status changes spread over `subjects` enrollments."""
    return [
        {
            "specversion": "1.0",
            "id": f"{n:032x}",
            "source": "https://rest.myabsorb.com",
            "type": "absorb.course_enrollment.status_changed",
            "subject": f"00000000-0000-4000-8000-{n % subjects:012d}",
            "time": "2026-01-01T00:00:00Z",
            "datacontenttype": "application/json",
            "status": "Complete",
            "previousstatus": "InProgress",
            "data": {
                "current": {"id": n, "status": 3},
                "previous": {"status": 1},
                "changed": ["status"],
            },
        }
        for n in range(count)
    ]


async def fill(store: Store, events: list[dict[str, object]]) -> None:
    """Append the events to the outbox, a thousand a commit."""
    token = await store.acquire("bench", "outbox", 600_000)
    assert token is not None
    for start in range(0, len(events), 1000):
        page = [
            OutboxEvent(
                str(e["id"]),
                str(e["subject"]),
                str(e["type"]),
                "bench",
                "",
                json.dumps(e, separators=(",", ":")),
            )
            for e in events[start : start + 1000]
        ]
        await store.commit("bench", "outbox", token, Commit(events=page))


async def run_sink(
    redis: aioredis.Redis, sink: Sink, events: list[dict[str, object]], in_flight: int
) -> float:
    """Seconds the delivery core takes to take every event from a full outbox to the sink."""
    store = Store(redis, f"bench-{sink.name}")
    await fill(store, events)
    worker = SinkWorker(
        redis, store.prefix, sink, [Route(sinks=(sink.name,))], consumer="bench",
        max_in_flight=in_flight, circuit=Circuit(threshold=10**9),
    )  # fmt: skip
    await worker.setup()
    await sink.start()

    async def repeat(step: Callable[[], Awaitable[int]], idle_s: float) -> None:
        # As the daemon runs a sink: the feed and each delivery lane repeat on their own.
        while worker.delivered < len(events):
            if not await step():
                await asyncio.sleep(idle_s)

    started = time.perf_counter()
    lanes = [repeat(worker.deliver_once, 0.001) for _ in range(worker.lanes)]
    # The daemon's idle rest: a feed with nothing to read polls ten times a second.
    await asyncio.gather(repeat(worker.feed_once, 0.1), *lanes)
    elapsed = time.perf_counter() - started
    await sink.close()
    return elapsed


# -- http ------------------------------------------------------------------------------


def serve_receiver(port: int) -> None:
    """The receiver process: verify each signature, count, answer 204 (400 when it fails).

    aiohttp's low-level server (no application, router or middlewares): a receiver
    elsewhere would have a machine to itself, here it shares the cores with the bridge.
    """
    from standardwebhooks import Webhook

    webhook = Webhook(SECRET)
    counts = {"ok": 0, "bad": 0}

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET":
            return web.json_response(counts)
        body = await request.read()
        try:
            webhook.verify(body, request.headers)  # type: ignore[arg-type]  # a mapping is enough
        except Exception:  # the library raises its own error types
            counts["bad"] += 1
            return web.Response(status=400)
        counts["ok"] += 1
        return web.Response(status=204)

    async def serve() -> None:
        server = web.Server(handle, access_log=None)
        await asyncio.get_running_loop().create_server(server, "127.0.0.1", port)
        await asyncio.Event().wait()

    asyncio.run(serve())


async def receiver_counts(url: str) -> dict[str, int]:
    """What the receiver took and refused so far."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/counts") as reply:
        counts: dict[str, int] = await reply.json()
        return counts


async def http_floor(
    url: str, sink: HttpSink, events: list[dict[str, object]], in_flight: int
) -> float:
    """Seconds for plain aiohttp to POST the same signed bodies, `in_flight` at a time."""
    requests = [
        sink.request(Delivery(e, json.dumps(e, separators=(",", ":")), "bench", "")) for e in events
    ]
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=in_flight), cookie_jar=aiohttp.DummyCookieJar()
    ) as http:
        timeout = aiohttp.ClientTimeout(total=15)
        pending = iter(requests)

        async def post() -> None:
            for body, headers in pending:
                async with http.post(url, data=body, headers=headers, timeout=timeout) as reply:
                    await reply.read()
                    assert reply.status == 204, reply.status

        started = time.perf_counter()
        await asyncio.gather(*(post() for _ in range(in_flight)))
        return time.perf_counter() - started


async def bench_http(redis: aioredis.Redis, events: list[dict[str, object]], in_flight: int) -> Row:
    """The http sink against a receiver process, and the plain-aiohttp floor."""
    port = free_port()
    receiver = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-receiver", str(port)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_for_port(port)
        config = {"name": "http", "type": "http", "url": f"{base}/hook", "secret": SECRET,
                  "max_in_flight": in_flight}  # fmt: skip
        sink = HttpSink(HttpSinkConfig.model_validate(config))
        floor = len(events) / await http_floor(f"{base}/hook", sink, events, in_flight)
        value = len(events) / await run_sink(redis, sink, events, in_flight)
        counts = await receiver_counts(base)
    finally:
        receiver.terminate()
        await receiver.wait()
    assert counts == {"ok": 2 * len(events), "bad": 0}, counts
    floor_is = f"plain aiohttp POSTs of the same signed bodies, {in_flight} at a time, no Redis"
    name = f"delivery, http sink (signed, receiver process, {in_flight} in flight)"
    return Row(
        name, value, "events/s", floor, floor_is, f">= {HTTP_TARGET:,}", value >= HTTP_TARGET
    )


async def _wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"the receiver did not open port {port}")


# -- redis stream ----------------------------------------------------------------------


async def stream_floor(sink: RedisStreamSink, events: list[dict[str, object]]) -> float:
    """Seconds for the sink itself to XADD the same events, a batch at a time, no queue."""
    deliveries = [Delivery(e, json.dumps(e, separators=(",", ":")), "bench", "") for e in events]
    await sink.start()
    started = time.perf_counter()
    for start in range(0, len(deliveries), MAX_BATCH):
        outcomes = await sink.send_many(deliveries[start : start + MAX_BATCH])
        assert not any(outcomes), outcomes
    elapsed = time.perf_counter() - started
    await sink.close()
    return elapsed


async def bench_stream(
    redis_url: str, redis: aioredis.Redis, events: list[dict[str, object]]
) -> Row:
    """The redis_stream sink, and the floor of the same XADDs without the queue."""
    config = {"name": "stream", "type": "redis_stream", "stream": "bench-target"}
    floor_sink = RedisStreamSink(
        RedisStreamSinkConfig.model_validate({**config, "stream": "bench-floor"}), redis_url
    )
    floor = len(events) / await stream_floor(floor_sink, events)
    sink = RedisStreamSink(RedisStreamSinkConfig.model_validate(config), redis_url)
    value = len(events) / await run_sink(redis, sink, events, 1)
    assert await redis.xlen("bench-target") == len(events)
    floor_is = f"the sink's own XADD pipelines of {MAX_BATCH}, no queue"
    name = "delivery, redis_stream sink"
    return Row(
        name, value, "events/s", floor, floor_is, f">= {STREAM_TARGET:,}", value >= STREAM_TARGET
    )


# -- both ------------------------------------------------------------------------------


async def run(redis_url: str, events: int, subjects: int = 2_000, in_flight: int = 64) -> list[Row]:
    """Both figures against the Redis at `redis_url` (its database is flushed first)."""
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushdb()
    sample = make_events(events, subjects)
    try:
        return [
            await bench_http(redis, sample, in_flight),
            await bench_stream(redis_url, redis, sample),
        ]
    finally:
        await redis.aclose()


def main() -> None:
    """Parse the arguments, start a private redis-server, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--subjects", type=int, default=2_000)
    parser.add_argument("--in-flight", type=int, default=64, help="the http sink's max_in_flight")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON line")
    parser.add_argument("--serve-receiver", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver:
        serve_receiver(args.serve_receiver)
        return
    logs.configure(level="info", json=True)  # as the daemon runs: debug lines filtered out
    redis_bin = shutil.which("redis-server") or sys.exit("redis-server is not installed")
    port, workdir = free_port(), Path(tempfile.mkdtemp())
    proc = subprocess.Popen(
        [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        url = f"redis://127.0.0.1:{port}/0"
        rows = asyncio.run(run(url, args.events, args.subjects, args.in_flight))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps([asdict(r) for r in rows]))
        return
    print(f"{args.events:,} events over {args.subjects:,} subjects")
    for r in rows:
        print(
            f"{r.name}\n  {r.value:8,.0f} {r.unit}   floor {r.floor:8,.0f}"
            f" ({r.value / r.floor:.0%}: {r.floor_is})"
            f"\n  target {r.target} ({'met' if r.met else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
