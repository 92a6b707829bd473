"""Statements per second from the xapi sink to Ralph, next to the plain-HTTP floor.

    .venv/bin/python -m bench.xapi [--events 2000] [--json]

Starts a private Ralph LRS (from `.venv-ralph`, which `bash tests/run` installs,
served by `tests/ralph_lrs.py` on its file-system backend) and an in-process aiohttp
receiver that answers every statement request at once. Each course completion
makes two statements (completed, passed). Two ways of sending are timed, each next
to its floor measured in the same run: the same request bodies sent with plain
aiohttp to the receiver, with no mapping, no validation and no LRS behind them.

- POST batches: `send_many` with `batch_size` 50, `max_in_flight` 8 (and the same
  sink against the receiver: what the sink itself costs);
- PUT each: `send` per event, 8 events in flight, one PUT per statement (a tenth as
  many events: Ralph takes them slowly).

`--json` prints the rows as one JSON line, which `bench/run_all.py` collects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.report import Row, emit
from bridge import events, samples
from bridge.absorb.models import Status
from bridge.config import XapiSinkConfig
from bridge.diff import diff
from bridge.feeds import observe
from bridge.sinks.base import Delivery
from bridge.sinks.xapi import XapiSink
from bridge.snapshots import Kind

ROOT = Path(__file__).resolve().parent.parent
RALPH_PYTHON = ROOT / ".venv-ralph" / "bin" / "python"
RALPH = ROOT / ".venv-ralph" / "bin" / "ralph"
LAUNCHER = ROOT / "tests" / "ralph_lrs.py"
IN_FLIGHT = 8
BATCH = 50
SOURCE = "https://acme.myabsorb.com"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def completions(count: int) -> list[Delivery]:
    """`count` course completions of different enrollments, as the engine emits them."""
    at = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    made = []
    for _ in range(count):
        ids = {"id": str(uuid.uuid4()), "courseId": str(uuid.uuid4()), "userId": str(uuid.uuid4())}
        before = samples.record(Kind.course_enrollment, at - timedelta(hours=1),
                                status=Status.InProgress, progress=50.0)  # fmt: skip
        after = samples.record(Kind.course_enrollment, at, status=Status.Complete, progress=100.0)
        seen = observe(Kind.course_enrollment, {**after, **ids})
        previous = observe(Kind.course_enrollment, {**before, **ids}).snapshot()
        (change,) = diff(previous, seen, emit_created=True, progress_events=False).changes
        event = events.cloud_event(SOURCE, change)
        made.append(Delivery(event, events.encode(event).decode(), "bench", ids["courseId"]))
    return made


class Ralph:
    """A private Ralph on a loopback port, with one HTTP Basic user."""

    def __init__(self, workdir: Path) -> None:
        if not RALPH_PYTHON.exists():
            sys.exit("Ralph is not installed: run bash tests/run once, which installs .venv-ralph")
        self.port = free_port()
        self.password = secrets.token_urlsafe(12)
        self.url = f"http://127.0.0.1:{self.port}/xAPI/"
        self.env = {
            **os.environ,
            "RALPH_RUNSERVER_BACKEND": "fs",
            "RALPH_AUTH_FILE": str(workdir / "auth.json"),
            "RALPH_BACKENDS__DATA__FS__DEFAULT_DIRECTORY_PATH": str(workdir),
            "RALPH_BACKENDS__LRS__FS__DEFAULT_DIRECTORY_PATH": str(workdir),
        }
        subprocess.run(
            [str(RALPH), "auth", "-u", "bench", "-p", self.password, "-s", "all",
             "-M", "mailto:bench@example.com", "-w"],
            env=self.env, check=True, capture_output=True,
        )  # fmt: skip
        self.log = (workdir / "ralph.log").open("wb")
        self.proc = subprocess.Popen(
            [str(RALPH_PYTHON), str(LAUNCHER), "127.0.0.1", str(self.port)],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    async def ready(self) -> None:
        """Wait until Ralph answers HTTP."""
        for _ in range(600):
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://127.0.0.1:{self.port}/whoami") as reply,
                ):
                    if reply.status in (200, 401):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("Ralph did not start")

    def stop(self) -> None:
        """Stop Ralph."""
        self.proc.terminate()
        self.proc.wait(15)
        self.log.close()


async def start_receiver() -> tuple[web.AppRunner, str]:
    """The floor's receiver: answers every PUT 204 and every POST 200, in process."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        return web.Response(status=204 if request.method == "PUT" else 200)

    runner = web.AppRunner(web.Application(), handle_signals=False)
    runner.app.router.add_route("*", "/xAPI/statements", handle)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/xAPI/"


def sink_for(url: str, password: str, batch_size: int) -> XapiSink:
    """An xapi sink as a config would make it."""
    return XapiSink(XapiSinkConfig.model_validate({
        "name": "lrs", "type": "xapi", "endpoint": url, "username": "bench",
        "password": password, "batch_size": batch_size, "max_in_flight": IN_FLIGHT,
    }))  # fmt: skip


async def time_sink(sink: XapiSink, deliveries: Sequence[Delivery], batched: bool) -> float:
    """Seconds for the sink to take every delivery: in batches, or one event at a time."""
    await sink.start()
    started = time.perf_counter()
    if batched:
        outcomes = await sink.send_many(deliveries)
        assert not any(outcomes), next(o for o in outcomes if o)
    else:
        pending = iter(deliveries)

        async def lane() -> None:
            for delivery in pending:
                await sink.send(delivery)

        await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - started
    await sink.close()
    return elapsed


async def time_floor(url: str, bodies: list[Any], method: str) -> float:
    """Seconds for plain aiohttp to send the same bodies to the receiver, IN_FLIGHT at a time."""
    headers = {"Content-Type": "application/json", "X-Experience-API-Version": "1.0.3"}
    requests = [
        (f"{url}statements" + (f"?statementId={b['id']}" if method == "PUT" else ""),
         json.dumps(b, separators=(",", ":")).encode())
        for b in bodies
    ]  # fmt: skip
    pending = iter(requests)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT)) as http:

        async def lane() -> None:
            for target, data in pending:
                async with http.request(method, target, data=data, headers=headers) as reply:
                    await reply.read()
                    assert reply.status in (200, 204), reply.status

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
        return time.perf_counter() - started


async def run(count: int, workdir: Path) -> list[Row]:
    """Both ways of sending, each against a fresh Ralph and against the floor's receiver.

    Fresh, because Ralph's file-system backend reads its whole file on every request,
    so its rate falls as it fills; each phase starts from an empty LRS.
    """
    runner, receiver = await start_receiver()
    try:
        shaper = sink_for(receiver, "x", BATCH)
        batch_deliveries, put_deliveries = completions(count), completions(count // 10)
        per_event = [shaper.statements(d) for d in batch_deliveries]
        batches = [
            [s for statements in per_event[i : i + BATCH] for s in statements]
            for i in range(0, len(per_event), BATCH)
        ]
        put_bodies = [s for d in put_deliveries for s in shaper.statements(d)]
        statements = sum(len(s) for s in per_event)
        rows = []
        floor = statements / await time_floor(receiver, batches, "POST")
        own = statements / await time_sink(sink_for(receiver, "x", BATCH), batch_deliveries, True)
        value = statements / await _against_ralph(workdir / "post", batch_deliveries, BATCH)
        rows.append(Row(
            f"xapi sink to Ralph, POST batches of {BATCH} events, {IN_FLIGHT} in flight",
            value, "statements/s", floor,
            "the same POST bodies to a plain aiohttp receiver, no LRS", "", None,
        ))  # fmt: skip
        rows.append(Row(
            "xapi sink to the plain receiver (the sink's own cost: mapping, checking, POSTs)",
            own, "statements/s", floor,
            "the same POST bodies to a plain aiohttp receiver, no LRS", "", None,
        ))  # fmt: skip
        floor = len(put_bodies) / await time_floor(receiver, put_bodies, "PUT")
        value = len(put_bodies) / await _against_ralph(workdir / "put", put_deliveries, 1)
        rows.append(Row(
            f"xapi sink to Ralph, a PUT per statement, {IN_FLIGHT} events in flight",
            value, "statements/s", floor,
            "the same PUTs to a plain aiohttp receiver, no LRS", "", None,
        ))  # fmt: skip
        return rows
    finally:
        await runner.cleanup()


async def _against_ralph(workdir: Path, deliveries: Sequence[Delivery], batch_size: int) -> float:
    """Seconds for the sink to put `deliveries` in a fresh Ralph (`workdir` is its own)."""
    ralph = Ralph(workdir)
    try:
        await ralph.ready()
        sink = sink_for(ralph.url, ralph.password, batch_size)
        return await time_sink(sink, deliveries, batched=batch_size > 1)
    finally:
        ralph.stop()


def main() -> None:
    """Parse the arguments, run, print the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="completions sent in batches")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-xapi-") as workdir:
        for phase in ("post", "put"):
            (Path(workdir) / phase).mkdir()
        rows = asyncio.run(run(args.events, Path(workdir)))
    emit(rows, as_json=args.json)


if __name__ == "__main__":
    main()
