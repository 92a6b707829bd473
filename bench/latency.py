"""Latency from a change in Absorb to the signed webhook arriving: p50 and p99.

    .venv/bin/python -m bench.latency --changes 1200 --rate 20 [--json]

The simulator (in this process) changes one course enrollment's status at a
steady rate; an `absorb-bridge run` process with `interval: 1s` sweeps it and
delivers to a receiver (in this process) that verifies each signature. Each
event's delay is its arrival time minus the change's `dateEdited`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from aiohttp import web
from standardwebhooks import Webhook

from bench.report import Row, emit
from bridge.absorb.models import Status
from bridge.simulator.faults import Faults
from bridge.simulator.generate import TenantSpec
from bridge.simulator.server import Simulator, SimulatorConfig

SECRET = "whsec_" + base64.b64encode(b"latency-secret-latency-s").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bench(changes: int, rate: float) -> list[Row]:
    workdir = Path(tempfile.mkdtemp(prefix="absorb-latency-"))
    sim = Simulator(SimulatorConfig(
        api_key="k", username="u", password="p", tenant=TenantSpec(seed=3, users=200, courses=5),
        faults=Faults(rate_limit_per_s=None),
    ))  # fmt: skip
    sim_runner = web.AppRunner(sim.app(), access_log=None)
    await sim_runner.setup()
    sim_port, hook_port, redis_port = free_port(), free_port(), free_port()
    await web.TCPSite(sim_runner, "127.0.0.1", sim_port).start()
    delays: list[float] = []
    verifier = Webhook(SECRET)
    all_in = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        verifier.verify(body, {k.lower(): v for k, v in request.headers.items()})
        event = json.loads(body)
        edited = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
        delays.append(time.time() - edited)
        if len(delays) >= changes:
            all_in.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    hook_runner = web.AppRunner(app, access_log=None)
    await hook_runner.setup()
    await web.TCPSite(hook_runner, "127.0.0.1", hook_port).start()
    redis_bin = shutil.which("redis-server") or sys.exit("redis-server is not installed")
    redis = await asyncio.create_subprocess_exec(
        redis_bin, "--port", str(redis_port), "--save", "", "--dir", str(workdir),
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    config = workdir / "bridge.yaml"
    config.write_text(f"""
absorb: {{base_url: "http://127.0.0.1:{sim_port}", api_key: k, username: u, password: p,
          max_requests_per_second: 200}}
redis: {{url: "redis://127.0.0.1:{redis_port}/0", prefix: latency}}
http: {{listen: "127.0.0.1:0"}}
feeds: [{{name: courses, resource: course_enrollments, interval: 1s, max_interval: 1s,
          lookback: 5s}}]
sinks: [{{name: hook, type: http, url: "http://127.0.0.1:{hook_port}/hook", secret: "{SECRET}"}}]
routes: [{{sinks: [hook], types: [absorb.course_enrollment.status_changed]}}]
""")  # fmt: skip
    bridge = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "--log-level", "warning", "run", "--config", str(config),
        env=os.environ.copy(),
    )  # fmt: skip
    try:
        await asyncio.sleep(5)  # started, baseline recorded
        enrollments = list(sim.tenant.enrollments.values())
        for n in range(changes):
            ce = enrollments[n % len(enrollments)]
            sim.tenant.set_status(
                ce, Status.Failed if ce.status != Status.Failed else Status.Complete
            )
            await asyncio.sleep(1 / rate)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 60)
    finally:
        bridge.send_signal(signal.SIGTERM)
        await bridge.wait()
        redis.terminate()
        await redis.wait()
        await hook_runner.cleanup()
        await sim_runner.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    cuts = statistics.quantiles(delays, n=100)
    print(
        f"{len(delays):,} of {changes:,} changes delivered at {rate:g} changes/s, interval 1s",
        file=sys.stderr,
    )
    # The floor: a change waits for the next sweep, uniformly up to the 1 s interval.
    return [
        Row(f"latency p50, change in Absorb to signed webhook ({len(delays):,} of {changes:,})",
            cuts[49], "s", 0.5, "median wait for the next 1 s sweep"),
        Row("latency p99, change in Absorb to signed webhook", cuts[98], "s", 0.99,
            "p99 wait for the next 1 s sweep", "<= 2", cuts[98] <= 2 and len(delays) == changes),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON line")
    args = parser.parse_args()
    emit(asyncio.run(bench(args.changes, args.rate)), as_json=args.json)


if __name__ == "__main__":
    main()
