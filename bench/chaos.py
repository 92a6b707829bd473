"""Chaos: the bridge under kills, a Redis crash, a failing receiver and a misbehaving Absorb.

    .venv/bin/python bench/chaos.py --rounds 40 --replicas 3     # the long run
    (the test suite runs a short form: tests/test_chaos.py)

The simulator makes learner activity in this process; a signed HTTP receiver
records what arrives; one to three `absorb-bridge run` replicas deliver to it.
Each round injects one fault for a few seconds. At the end every fault is
cleared, the activity stops, and the run waits until the receiver holds every
change. Then it checks, per enrollment, that the chain of status events is
whole (each `previousstatus` is the status before it) and ends at the status the
simulator holds: a change that never arrived breaks one of the two.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from bridge.absorb.models import Status
from bridge.simulator.faults import Faults
from bridge.simulator.generate import TenantSpec
from bridge.simulator.server import Simulator, SimulatorConfig

SECRET = "whsec_" + base64.b64encode(b"chaos-secret-chaos-secret").decode()
FAULTS = (
    "kill_replica",
    "redis_crash",
    "receiver_down",
    "receiver_slow",
    "receiver_500",
    "receiver_429",
    "absorb_429",
    "absorb_500",
    "absorb_malformed",
    "absorb_slow",
    "absorb_tokens_expire",
    "absorb_mutating_pages",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Report:
    """What a chaos run did and found."""

    rounds: int = 0
    replicas: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    changes: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    max_delay_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The run as a table."""
        rows = [
            ("rounds", str(self.rounds)),
            ("replicas", str(self.replicas)),
            ("faults injected", ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))),
            ("status changes made", f"{self.changes:,}"),
            ("events delivered", f"{self.delivered:,}"),
            ("lost", str(self.lost)),
            ("duplicates (same id again)", str(self.duplicates)),
            ("max delivery delay", f"{self.max_delay_s:.1f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


class Receiver:
    """A webhook receiver whose behaviour the run switches; it checks every signature."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mode = "ok"
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.bad_signatures = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        from standardwebhooks import Webhook

        verifier = Webhook(SECRET)

        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                verifier.verify(body, {k.lower(): v for k, v in request.headers.items()})
            except Exception:  # the library's own error types
                self.bad_signatures += 1
                return web.Response(status=400)
            if self.mode == "slow":
                await asyncio.sleep(5)
            if self.mode == "500":
                return web.Response(status=500)
            if self.mode == "429":
                return web.Response(status=429, headers={"Retry-After": "1"})
            self.arrivals.append((time.time(), json.loads(body)))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class Chaos:
    """The moving parts of a run and the faults that can be played on them."""

    def __init__(self, workdir: Path, replicas: int, seed: int) -> None:
        self.workdir = workdir
        self.replicas = replicas
        self.rng = random.Random(seed)
        self.redis_port = free_port()
        self.receiver = Receiver(free_port())
        self.bridges: list[asyncio.subprocess.Process | None] = [None] * replicas
        self.redis: asyncio.subprocess.Process | None = None
        self.sim: Simulator | None = None
        self.sim_runner: web.AppRunner | None = None
        self.config = workdir / "bridge.yaml"
        self.log = (workdir / "bridges.log").open("ab")

    async def start(self) -> None:
        self.sim = Simulator(
            SimulatorConfig(
                api_key="chaos-key",
                username="chaos",
                password="chaos-password",
                tenant=TenantSpec(seed=9, users=80, courses=4),
                activity_per_second=15,
                faults=Faults(rate_limit_per_s=None),
            )
        )
        self.sim_runner = web.AppRunner(self.sim.app(), access_log=None)
        await self.sim_runner.setup()
        sim_port = free_port()
        await web.TCPSite(self.sim_runner, "127.0.0.1", sim_port).start()
        await self.receiver.start()
        await self.start_redis()
        self.config.write_text(
            f"""
absorb: {{base_url: "http://127.0.0.1:{sim_port}", api_key: chaos-key, username: chaos,
          password: chaos-password, max_requests_per_second: 100, timeout: 3s}}
redis: {{url: "redis://127.0.0.1:{self.redis_port}/0", prefix: chaos}}
http: {{listen: "127.0.0.1:0"}}
feeds:
  - {{name: courses, resource: course_enrollments, interval: 500ms, max_interval: 1s,
      lookback: 5s}}
sinks:
  - {{name: hook, type: http, url: "http://127.0.0.1:{self.receiver.port}/hook",
      secret: "{SECRET}", timeout: 2s, max_in_flight: 16,
      retry_schedule: [0, 200ms, 500ms, 1s, 1s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s, 2s]}}
routes:
  - sinks: [hook]
"""
        )
        for n in range(self.replicas):
            await self.start_bridge(n)

    async def start_redis(self) -> None:
        binary = shutil.which("redis-server") or sys.exit("redis-server is not installed")
        self.redis = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(0.5)

    async def start_bridge(self, n: int) -> None:
        self.bridges[n] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(self.config),
            stdout=self.log, stderr=self.log, env=os.environ.copy(),
        )  # fmt: skip

    async def play(self, fault: str, seconds: float) -> None:
        """Inject one fault, let it act for `seconds`, then clear it."""
        assert self.sim is not None
        if fault == "kill_replica":
            n = self.rng.randrange(self.replicas)
            process = self.bridges[n]
            if process is not None:
                process.kill()
                await process.wait()
            await asyncio.sleep(seconds)
            await self.start_bridge(n)
        elif fault == "redis_crash":
            assert self.redis is not None
            self.redis.kill()
            await self.redis.wait()
            await asyncio.sleep(seconds)
            await self.start_redis()
        elif fault == "receiver_down":
            await self.receiver.stop()
            await asyncio.sleep(seconds)
            await self.receiver.start()
        elif fault.startswith("receiver_"):
            self.receiver.mode = fault.removeprefix("receiver_")
            await asyncio.sleep(seconds)
            self.receiver.mode = "ok"
        elif fault == "absorb_tokens_expire":
            self.sim.auth.expire_all()
            await asyncio.sleep(seconds)
        else:
            faults = {
                "absorb_429": {"rate_limit_per_s": 5.0, "rate_limit_burst": 5},
                "absorb_500": {"error_rate": 0.3},
                "absorb_malformed": {"malformed_rate": 0.2},
                "absorb_slow": {"latency_ms": 1500.0},
                "absorb_mutating_pages": {"mutate_while_paging": 3},
            }[fault]
            self.sim.faults = Faults.model_validate({"rate_limit_per_s": None, **faults})
            await asyncio.sleep(seconds)
            self.sim.faults = Faults(rate_limit_per_s=None)

    async def finish(self, baseline: dict[str, int], timeout_s: float) -> None:
        """Stop the activity and wait until the receiver has caught up with the simulator."""
        assert self.sim is not None
        self.sim.activity.per_second = 0
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        count = -1
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            if len(self.receiver.arrivals) != count:
                count, quiet_since = len(self.receiver.arrivals), time.monotonic()
            elif time.monotonic() - quiet_since > 8 and not self.missing(baseline):
                return

    def missing(self, baseline: dict[str, int]) -> list[str]:
        """Enrollments whose last delivered status (or baseline) is not the simulator's."""
        assert self.sim is not None
        last: dict[str, str] = {}
        for _, event in self.receiver.arrivals:
            if event["type"].startswith("absorb.course_enrollment."):
                last[event["subject"]] = event["status"]
        gone = []
        for rid, ce in self.sim.tenant.enrollments.items():
            known = last.get(rid) or (Status(baseline[rid]).name if rid in baseline else None)
            if known is not None and known != Status(ce.status).name:
                gone.append(rid)
        return gone

    async def stop(self) -> None:
        for process in self.bridges:
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.bridges:
            if process is not None:
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    process.kill()
        if self.redis is not None:
            self.redis.terminate()
            await self.redis.wait()
        await self.receiver.stop()
        if self.sim_runner is not None:
            await self.sim_runner.cleanup()
        self.log.close()


def judge(chaos: Chaos, baseline: dict[str, int], report: Report) -> None:
    """Fill in the report: chains whole, last statuses right, duplicates and delays."""
    assert chaos.sim is not None
    arrivals = chaos.receiver.arrivals
    ids = [event["id"] for _, event in arrivals]
    report.delivered = len(set(ids))
    report.duplicates = len(ids) - len(set(ids))
    first: dict[str, tuple[float, dict[str, Any]]] = {}
    for when, event in arrivals:
        first.setdefault(event["id"], (when, event))
    chains: dict[str, list[dict[str, Any]]] = {}
    for when, event in sorted(first.values(), key=lambda pair: pair[0]):
        sent = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
        report.max_delay_s = max(report.max_delay_s, when - sent)
        if event["type"].startswith("absorb.course_enrollment."):
            chains.setdefault(event["subject"], []).append(event)
    broken = set()
    for rid, chain in chains.items():
        status = Status(baseline[rid]).name if rid in baseline else None
        for event in chain:
            if event["type"].endswith("status_changed") and event.get("previousstatus") != status:
                broken.add(rid)
                report.problems.append(f"{rid}: {event.get('previousstatus')} after {status}")
            status = event["status"]
        ce = chaos.sim.tenant.enrollments.get(rid)
        if ce is not None and status != Status(ce.status).name:
            broken.add(rid)
            report.problems.append(
                f"{rid}: ends at {status}, Absorb holds {Status(ce.status).name}"
            )
    for rid, ce in chaos.sim.tenant.enrollments.items():
        if rid in baseline and baseline[rid] != ce.status and rid not in chains:
            broken.add(rid)
            report.problems.append(f"{rid}: changed and never announced")
    report.lost = len(broken)
    report.changes = sum(
        1
        for c in chaos.sim.tenant.changes
        if c.kind == "course_enrollment" and c.status is not None
    )


async def run_chaos(rounds: int, replicas: int, seed: int = 1, fault_s: float = 3.0) -> Report:
    """One chaos run; returns its report."""
    workdir = Path(tempfile.mkdtemp(prefix="absorb-chaos-"))
    chaos = Chaos(workdir, replicas, seed)
    report = Report(rounds=rounds, replicas=replicas)
    try:
        await chaos.start()
        assert chaos.sim is not None
        activity = chaos.sim.activity.per_second
        chaos.sim.activity.per_second = 0
        await asyncio.sleep(4)  # the baseline sweeps of every replica
        baseline = {rid: ce.status for rid, ce in chaos.sim.tenant.enrollments.items()}
        first_change = chaos.sim.tenant.last_change_seq
        chaos.sim.activity.per_second = activity
        for _ in range(rounds):
            fault = chaos.rng.choice(FAULTS)
            report.faults[fault] = report.faults.get(fault, 0) + 1
            await chaos.play(fault, fault_s)
            await asyncio.sleep(1)
        await chaos.finish(baseline, timeout_s=180)
        judge(chaos, baseline, report)
        report.changes = sum(
            1
            for c in chaos.sim.tenant.changes
            if c.kind == "course_enrollment" and c.status is not None and c.seq > first_change
        )
    finally:
        await chaos.stop()
    if report.lost or report.problems:
        report.problems.insert(0, f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    report = asyncio.run(run_chaos(args.rounds, args.replicas, args.seed))
    print(report.table())
    for problem in report.problems[:20]:
        print("  " + problem)
    sys.exit(1 if report.lost else 0)


if __name__ == "__main__":
    main()
