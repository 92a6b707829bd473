"""End to end with Absorb's webhooks as hints: change to signed webhook, announced or not.

    .venv/bin/python -m bench.hints --courses 500 --rps 20 --changes 240 --rate 2 [--json]

An in-process simulator with `--courses` courses; an `absorb-bridge run` process
with a budget of `--rps` requests/s, `interval` one round-robin cycle
(courses / rps) and `absorb.webhooks` on; a receiver verifying each signed
CloudEvent. Changes go at `--rate`/s to enrollments spread over every course;
every other one is announced by a notice naming its course, sent when it is made.
Each change is to an enrollment of its own, so that every one should arrive (as
`created` when the enrollment was waiting for approval, which Absorb does not list).
The unannounced half is the baseline of the same run: what polling alone gives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web
from standardwebhooks import Webhook

from bench.latency import SECRET, free_port
from bench.report import Row, emit
from bridge import keys
from bridge.absorb.models import Status
from bridge.simulator.faults import Faults
from bridge.simulator.generate import TenantSpec
from bridge.simulator.server import Simulator, SimulatorConfig
from bridge.simulator.webhooks import WebhookSettings

HOOK_SECRET = "bench-absorb-webhook-secret"


class Receiver:
    """The sink's receiver: verifies each event and notes how long after its change it came."""

    def __init__(self) -> None:
        self.verifier = Webhook(SECRET)
        self.delays: dict[str, float] = {}
        #: What the run expects to arrive, and set once it all has (after the last change).
        self.expected: set[str] = set()
        self.all_made = False
        self.all_in = asyncio.Event()

    async def hook(self, request: web.Request) -> web.Response:
        """Take one signed CloudEvent."""
        body = await request.read()
        self.verifier.verify(body, {k.lower(): v for k, v in request.headers.items()})
        event = json.loads(body)
        edited = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
        self.delays.setdefault(f"{event['subject']}/{event['status']}", time.time() - edited)
        self.check()
        return web.Response(status=204)

    def check(self) -> None:
        """Set `all_in` once every change is made and has arrived (not while changes go on)."""
        if self.all_made and self.expected <= self.delays.keys():
            self.all_in.set()


def _config(workdir: Path, ports: dict[str, int], rps: float, interval_s: float) -> Path:
    config = workdir / "bridge.yaml"
    config.write_text(f"""
absorb: {{base_url: "http://127.0.0.1:{ports['sim']}", api_key: k, username: u, password: p,
          max_requests_per_second: {rps},
          webhooks: {{listen: "127.0.0.1:{ports['notices']}", secret: "{HOOK_SECRET}"}}}}
redis: {{url: "redis://127.0.0.1:{ports['redis']}/0", prefix: hints}}
http: {{listen: "127.0.0.1:0"}}
feeds: [{{name: courses, resource: course_enrollments, interval: {interval_s:g}s,
          max_interval: {interval_s:g}s, lookback: 5s}}]
sinks: [{{name: hook, type: http, url: "http://127.0.0.1:{ports['hook']}/hook",
          secret: "{SECRET}"}}]
routes: [{{sinks: [hook], types: [absorb.course_enrollment.status_changed,
                                  absorb.course_enrollment.created]}}]
""")  # fmt: skip
    return config


async def _baselined(port: int, courses: int, *, timeout_s: float) -> None:
    """Wait until every course's scope has finished a sweep (its watermark or state is set)."""
    client = aioredis.Redis(port=port)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            names = await client.smembers(keys.scopes("hints", "courses"))
            swept = 0
            for name in names:
                state = await client.hgetall(keys.scope_state("hints", "courses", name.decode()))
                swept += b"sweep_started" in state
            if swept >= courses:
                return
            await asyncio.sleep(0.5)
        sys.exit(f"only {swept} of {courses} courses were baselined within {timeout_s:.0f}s")
    finally:
        await client.aclose()


async def _serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def bench(courses: int, rps: float, changes: int, rate: float) -> list[Row]:
    workdir = Path(tempfile.mkdtemp(prefix="absorb-hints-"))
    interval_s = courses / rps
    sim = Simulator(SimulatorConfig(
        api_key="k", username="u", password="p",
        tenant=TenantSpec(seed=5, users=100, courses=courses, enrollment_ratio=0.05),
        faults=Faults(rate_limit_per_s=None),
    ))  # fmt: skip
    ports = {name: free_port() for name in ("sim", "hook", "redis", "notices")}
    receiver = Receiver()
    hook_app = web.Application()
    hook_app.router.add_post("/hook", receiver.hook)
    runners = [await _serve(sim.app(), ports["sim"]), await _serve(hook_app, ports["hook"])]
    sim.webhooks.settings = WebhookSettings(
        url=f"http://127.0.0.1:{ports['notices']}/absorb/webhooks", secret=HOOK_SECRET, share=0
    )
    redis_bin = shutil.which("redis-server") or sys.exit("redis-server is not installed")
    redis = await asyncio.create_subprocess_exec(
        redis_bin, "--port", str(ports["redis"]), "--save", "", "--dir", str(workdir),
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    config = _config(workdir, ports, rps, interval_s)
    bridge = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "--log-level", "warning", "run", "--config", str(config),
        env=os.environ.copy(),
    )  # fmt: skip
    announced: set[str] = set()
    made = receiver.expected
    try:
        # A change made before its course's first sweep is part of that sweep's baseline
        # (first_sync: baseline), not an event: changes start once every course has one.
        await _baselined(ports["redis"], courses, timeout_s=10 * interval_s + 30)
        rng = random.Random(1)
        by_course = [list(c.values()) for c in sim.tenant.by_course.values() if c]
        for n in range(changes):
            # Each change to an enrollment of its own: two changes of one enrollment between
            # two sweeps are seen as one, which is the scheduler's to measure, not this.
            ce = rng.choice(rng.choice(by_course))
            while any(key.startswith(ce.id) for key in made):
                ce = rng.choice(rng.choice(by_course))
            status = Status.Failed if ce.status != Status.Failed else Status.Complete
            sim.tenant.set_status(ce, status)
            key = f"{ce.id}/{status.name}"
            made.add(key)
            if n % 2 == 0:
                announced.add(key)
                sim.webhooks.queue({"courseId": ce.course.id, "userId": ce.user.id})
            await asyncio.sleep(1 / rate)
        receiver.all_made = True
        receiver.check()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.all_in.wait(), 3 * interval_s)
        for key in sorted(made - receiver.delays.keys()):
            print(f"not delivered within {3 * interval_s:g}s: {key}", file=sys.stderr)
    finally:
        bridge.send_signal(signal.SIGTERM)
        await bridge.wait()
        redis.terminate()
        await redis.wait()
        for runner in runners:
            await runner.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return _rows(receiver.delays, announced, made, interval_s, rps, courses)


def _rows(
    delays: dict[str, float],
    announced: set[str],
    made: set[str],
    interval_s: float,
    rps: float,
    courses: int,
) -> list[Row]:
    hinted = [d for k, d in delays.items() if k in announced]
    polled = [d for k, d in delays.items() if k in made - announced]
    got = len(hinted) + len(polled)
    print(
        f"{got} of {len(made)} changes delivered ({len(hinted)} of {len(announced)} announced);"
        f" {courses} courses, {rps:g} requests/s, interval {interval_s:g}s",
        file=sys.stderr,
    )

    def q(values: list[float], n: int) -> float:
        return statistics.quantiles(values, n=100)[n - 1] if len(values) > 1 else float("nan")

    whole = got == len(made)
    return [
        Row("changes not delivered within 3 intervals of the last one", len(made) - got, "",
            target="0", met=whole),
        Row(f"hinted p50, announced change to signed webhook ({courses} courses, {rps:g} rps)",
            q(hinted, 50), "s", q(polled, 50), "unannounced, same run"),
        Row("hinted p99, announced change to signed webhook", q(hinted, 99), "s",
            q(polled, 99), "unannounced, same run", "<= 2", q(hinted, 99) <= 2),
        Row("unhinted p99, change to signed webhook (polling alone)", q(polled, 99), "s",
            interval_s, "one round-robin cycle", f"<= {1.3 * interval_s:g}",
            q(polled, 99) <= 1.3 * interval_s),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--courses", type=int, default=500)
    parser.add_argument("--rps", type=float, default=20.0)
    parser.add_argument("--changes", type=int, default=240)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON line")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        emit(asyncio.run(bench(args.courses, args.rps, args.changes, args.rate)), as_json=args.json)


if __name__ == "__main__":
    main()
