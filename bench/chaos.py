"""Chaos: the bridge under kills, lost Redis data, hostile records and misbehaving peers.

    .venv/bin/python -m bench.chaos --rounds 40 --replicas 3     # the long run
    (the test suite runs a short form: tests/test_chaos.py)

The simulator makes learner activity in this process; a signed HTTP receiver
records what arrives; one to three `absorb-bridge run` replicas deliver to it.
Each round injects one fault for a few seconds. At the end every fault is
cleared, the activity stops, and the run waits until the receiver holds every
change. Then `bench.chaos_judge` checks, per enrollment, that the chain of status
events is whole (each `previousstatus` is the status before it) and ends at the
status the simulator shows: a change that never arrived breaks one of the two.
Changes Redis's data loss swallowed are counted apart, hostile records are held
to their documented handling, and nothing may reach a redirect's `Location`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from bench.chaos_judge import Evidence, LossWindow, judge, status_name
from bridge import keys
from bridge.absorb.models import Status
from bridge.simulator.faults import Faults
from bridge.simulator.generate import TenantSpec
from bridge.simulator.server import Simulator, SimulatorConfig

SECRET = "whsec_" + base64.b64encode(b"chaos-secret-chaos-secret").decode()
PREFIX, FEED = "chaos", "courses"
FAULTS = (
    "kill_replica",
    "redis_crash",
    "redis_flushall",
    "redis_restart_empty",
    "receiver_down",
    "receiver_slow",
    "receiver_500",
    "receiver_429",
    "receiver_redirect",
    "absorb_429",
    "absorb_500",
    "absorb_malformed",
    "absorb_slow",
    "absorb_tokens_expire",
    "absorb_mutating_pages",
    "absorb_hostile_records",
)
#: Faults the receiver must have felt (it answered at least one request while it played).
FELT_BY_RECEIVER = ("receiver_slow", "receiver_500", "receiver_429", "receiver_redirect")
#: How long such a fault is kept on past its time while no request has met it yet: past
#: a sink circuit's pause after two failed probes in a row (15 s, doubled twice).
FELT_WITHIN_S = 65.0
REDIRECTS = (301, 302, 303, 307, 308)
#: What each hostile record gets, as the control API's `raw` (values) or `raw_json`
#: (JSON text written verbatim); bench.chaos_judge.HOSTILE_RULES says what must follow.
HOSTILE_VALUES: dict[str, dict[str, dict[str, Any]]] = {
    "progress_1e39": {"raw_json": {"progress": "1e39"}},
    "status_13": {"raw": {"status": 13}},
    "date_edited_9999": {"raw_json": {"dateEdited": '"9999-12-31T23:59:59.9999999"'}},
    # What a .NET serializer writes for a string cut inside an emoji.
    "lone_surrogate": {"raw_json": {"fullName": '"Ana \\ud83d"'}},
    "wrong_type": {"raw": {"progress": "lots"}},
}


#: Statuses a hostile record is moved to when planted (the first that is not its own).
_NEW_STATUSES = (int(Status.InProgress), int(Status.Failed))


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
    missed_in_data_loss: int = 0
    data_losses: int = 0
    #: Data losses after which the bridge logged no error saying changes may be missed.
    unannounced_losses: int = 0
    #: Data losses after which the bridge never swept every course again.
    unrecovered_losses: int = 0
    #: For each data loss, seconds until every course had been swept again.
    loss_windows_s: list[float] = field(default_factory=list)
    hostile: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Requests that reached a redirect's Location: each is an event sent where it must not go.
    sent_elsewhere: int = 0
    bad_signatures: int = 0
    #: Receiver faults played while the receiver answered no request: they proved nothing.
    unfelt_faults: list[str] = field(default_factory=list)
    duplicates: int = 0
    max_delay_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The run as a table."""
        hostile = ", ".join(
            f"{category} " + "/".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
            for category, counts in sorted(self.hostile.items())
        )
        windows = ", ".join(f"{w:.1f} s" for w in self.loss_windows_s) or "-"
        rows = [
            ("rounds", str(self.rounds)),
            ("replicas", str(self.replicas)),
            ("faults injected", ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))),
            ("status changes made", f"{self.changes:,}"),
            ("events delivered", f"{self.delivered:,}"),
            ("lost", str(self.lost)),
            (
                "missed during data loss",
                f"{self.missed_in_data_loss} in {self.data_losses} losses "
                f"(baselined again after {windows}), "
                f"{self.data_losses - self.unannounced_losses} announced by the bridge",
            ),
            ("hostile records", hostile or "none"),
            ("sent to a redirect's Location", str(self.sent_elsewhere)),
            ("duplicates (same id again)", str(self.duplicates)),
            ("max delivery delay", f"{self.max_delay_s:.1f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


async def _serve(app: web.Application, port: int) -> web.AppRunner:
    """Serve `app` on loopback `port` until its runner is cleaned up."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


class Receiver:
    """A webhook receiver whose behaviour the run switches; it checks every signature."""

    def __init__(self, port: int, trap_url: str) -> None:
        self.port = port
        self.trap_url = trap_url
        self.mode = "ok"
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.bad_signatures = 0
        #: Requests answered in each mode other than "ok"; `met` is set by each of them.
        self.felt: dict[str, int] = {}
        self.met = asyncio.Event()
        self._redirects = itertools.cycle(REDIRECTS)
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
            mode = self.mode
            if mode != "ok":
                self.felt[mode] = self.felt.get(mode, 0) + 1
                self.met.set()
            if mode == "slow":
                await asyncio.sleep(5)
            if mode == "500":
                return web.Response(status=500)
            if mode == "429":
                return web.Response(status=429, headers={"Retry-After": "1"})
            if mode == "redirect":
                return web.Response(
                    status=next(self._redirects), headers={"Location": self.trap_url}
                )
            self.arrivals.append((time.time(), json.loads(body)))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self._runner = await _serve(app, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class Trap:
    """A second server, where redirects point: it records every request, whatever it is."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/elsewhere"
        self.port = port
        self.requests: list[tuple[str, str, bytes]] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def record(request: web.Request) -> web.Response:
            self.requests.append((request.method, request.path, await request.read()))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        self._runner = await _serve(app, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@dataclass
class Loss:
    """One loss of Redis's data under the running bridges, as the run saw it."""

    after_seq: int
    pending: frozenset[str]
    log_offset: int
    started: float = field(default_factory=time.monotonic)
    until_seq: int | None = None
    #: Seconds from the loss until every course had been swept again.
    took_s: float | None = None


class Chaos:
    """The moving parts of a run and the faults that can be played on them."""

    def __init__(self, workdir: Path, replicas: int, seed: int) -> None:
        self.workdir = workdir
        self.replicas = replicas
        self.rng = random.Random(seed)
        self.redis_port = free_port()
        self.trap = Trap(free_port())
        self.receiver = Receiver(free_port(), self.trap.url)
        self.bridges: list[asyncio.subprocess.Process | None] = [None] * replicas
        self.redis: asyncio.subprocess.Process | None = None
        self.sim: Simulator | None = None
        self.sim_url = ""
        self.sim_runner: web.AppRunner | None = None
        self.config = workdir / "bridge.yaml"
        self.log_path = workdir / "bridges.log"
        self.log = self.log_path.open("ab")
        self.baseline: dict[str, int] = {}
        self.hostile: dict[str, str] = {}
        self.planted: list[tuple[float, str]] = []
        self.losses: list[Loss] = []
        self._watchers: list[asyncio.Task[None]] = []

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
        self.sim_url = f"http://127.0.0.1:{sim_port}"
        await web.TCPSite(self.sim_runner, "127.0.0.1", sim_port).start()
        await self.trap.start()
        await self.receiver.start()
        await self.start_redis()
        self.config.write_text(
            f"""
absorb: {{base_url: "{self.sim_url}", api_key: chaos-key, username: chaos,
          password: chaos-password, max_requests_per_second: 100, timeout: 3s}}
redis: {{url: "redis://127.0.0.1:{self.redis_port}/0", prefix: {PREFIX}}}
http: {{listen: "127.0.0.1:0"}}
feeds:
  - {{name: {FEED}, resource: course_enrollments, interval: 500ms, max_interval: 1s,
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

    async def kill_redis(self) -> None:
        assert self.redis is not None
        self.redis.kill()
        await self.redis.wait()

    async def start_bridge(self, n: int) -> None:
        self.bridges[n] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(self.config),
            stdout=self.log, stderr=self.log, env=os.environ.copy(),
        )  # fmt: skip

    def redis_client(self) -> aioredis.Redis:
        return aioredis.Redis(port=self.redis_port, socket_timeout=5)

    def note(self, what: str, **fields: Any) -> None:
        """A line in the bridges' log, in their shape, so a kept log reads as one timeline."""
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        line = {"event": f"chaos.{what}", **fields, "level": "info", "timestamp": stamp}
        self.log.write(json.dumps(line).encode() + b"\n")
        self.log.flush()

    async def play(self, fault: str, seconds: float) -> None:
        """Inject one fault, let it act for `seconds`, then clear it."""
        self.note("fault", fault=fault)
        await self._play(fault, seconds)
        self.note("cleared", fault=fault)

    async def _play(self, fault: str, seconds: float) -> None:
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
            await self.kill_redis()
            await asyncio.sleep(seconds)
            await self.start_redis()
        elif fault == "redis_flushall":
            loss = self.lose_data()
            client = self.redis_client()
            try:
                await client.flushall()
            finally:
                await client.aclose()
            self.watch(loss)
            await asyncio.sleep(seconds)
        elif fault == "redis_restart_empty":
            # Killed, and its append-only file gone: a restart without persistence.
            loss = self.lose_data()
            await self.kill_redis()
            shutil.rmtree(self.workdir / "appendonlydir", ignore_errors=True)
            (self.workdir / "appendonly.aof").unlink(missing_ok=True)
            await asyncio.sleep(seconds)
            await self.start_redis()
            self.watch(loss)
        elif fault == "receiver_down":
            await self.receiver.stop()
            await asyncio.sleep(seconds)
            await self.receiver.start()
        elif fault.startswith("receiver_"):
            self.receiver.met.clear()
            self.receiver.mode = fault.removeprefix("receiver_")
            await asyncio.sleep(seconds)
            # A sink whose circuit an earlier fault opened sends nothing until its pause
            # ends; the fault stays until a request meets it, or it would prove nothing.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.receiver.met.wait(), FELT_WITHIN_S)
            self.receiver.mode = "ok"
        elif fault == "absorb_tokens_expire":
            self.sim.auth.expire_all()
            await asyncio.sleep(seconds)
        elif fault == "absorb_hostile_records":
            await self.plant_hostile_records()
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

    async def plant_hostile_records(self) -> None:
        """Give one enrollment each hostile value, through the simulator's control API.

        Each gets a new status with it (or, for `status_13`, the hostile status is the
        new one), so each is a change the bridge must announce, carrying the hostile
        value; the change stamps it edited now, so the next sweep reads it.
        """
        assert self.sim is not None
        enrollments = self.sim.tenant.enrollments
        candidates = [rid for rid in enrollments if rid not in self.hostile]
        chosen = self.rng.sample(candidates, len(HOSTILE_VALUES))
        async with aiohttp.ClientSession() as http:
            for rid, (category, forced) in zip(chosen, HOSTILE_VALUES.items(), strict=True):
                shown = enrollments[rid].to_json()["status"]
                if "status" in forced.get("raw", {}):
                    edit: dict[str, Any] = {"progress": enrollments[rid].progress}
                else:
                    edit = {"status": next(s for s in _NEW_STATUSES if s != shown)}
                url = f"{self.sim_url}/_sim/records/{rid}"
                async with http.patch(url, json={"set": edit, **forced}) as reply:
                    if reply.status != 200:
                        raise RuntimeError(f"{url}: {reply.status} {await reply.text()}")
                self.hostile[rid] = category
                if "status" not in edit:
                    # A status only Absorb's JSON shows, not the simulator's change log: a
                    # change all the same, placed just after the newest logged one.
                    self.planted.append((self.sim.tenant.last_change_seq + 0.5, rid))

    def lose_data(self) -> Loss:
        """Note a data loss about to happen: the change log's position, the log's length,
        and the enrollments whose latest status the receiver does not hold yet."""
        assert self.sim is not None
        loss = Loss(
            after_seq=self.sim.tenant.last_change_seq,
            pending=frozenset(self.missing(everything=True)),
            log_offset=self.log_path.stat().st_size,
        )
        self.losses.append(loss)
        return loss

    def watch(self, loss: Loss) -> None:
        """Close the loss's window once every course has a watermark again (baselined)."""
        self._watchers.append(asyncio.create_task(self._watch(loss)))

    async def _watch(self, loss: Loss) -> None:
        assert self.sim is not None
        scopes = [keys.scope_state(PREFIX, FEED, f"course:{c}") for c in self.sim.tenant.courses]
        client = self.redis_client()
        try:
            while True:
                try:
                    marks = [await client.hget(scope, "watermark") for scope in scopes]
                except (RedisError, OSError):  # Redis restarting, or killed by another round
                    marks = []
                if marks and all(marks):
                    loss.until_seq = self.sim.tenant.last_change_seq
                    loss.took_s = time.monotonic() - loss.started
                    self.note("baselined_again", after_s=round(loss.took_s, 1))
                    return
                await asyncio.sleep(0.2)
        finally:
            await client.aclose()

    async def finish(self, timeout_s: float) -> None:
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
            elif (
                time.monotonic() - quiet_since > 8
                and all(loss.until_seq is not None for loss in self.losses)
                and not self.missing()
            ):
                return

    def missing(self, *, everything: bool = False) -> list[str]:
        """Enrollments whose last delivered status (or baseline) is not the one Absorb shows.

        Unless `everything`, leave out those a run may leave short by design: hostile
        records and enrollments caught in a data loss.
        """
        assert self.sim is not None
        last: dict[str, str] = {}
        for _, event in self.receiver.arrivals:
            if event["type"].startswith("absorb.course_enrollment."):
                last[event["subject"]] = event["status"]
        excused: set[str] = set()
        if not everything:
            excused = set(self.hostile)
            for loss in self.losses:
                excused |= loss.pending | self.changed_between(loss.after_seq, loss.until_seq)
        gone = []
        for rid, held in self.holdings().items():
            known = last.get(rid) or (
                status_name(self.baseline[rid]) if rid in self.baseline else None
            )
            if known != status_name(held) and rid not in excused:
                gone.append(rid)
        return gone

    def holdings(self) -> dict[str, int]:
        """Each course enrollment's status as Absorb's JSON shows it (hostile values too)."""
        assert self.sim is not None
        return {rid: ce.to_json()["status"] for rid, ce in self.sim.tenant.enrollments.items()}

    def changed_between(self, after_seq: int, until_seq: int | None) -> set[str]:
        """Course enrollments changed after `after_seq`, up to `until_seq` (None: up to now)."""
        assert self.sim is not None
        return {
            c.enrollment_id
            for c in self.sim.tenant.changes
            if c.kind == "course_enrollment"
            and c.seq > after_seq
            and (until_seq is None or c.seq <= until_seq)
        }

    async def quarantined(self) -> set[str]:
        """Enrollment ids in the bridge's quarantine."""
        client = self.redis_client()
        try:
            entries = await client.hkeys(keys.quarantine(PREFIX, FEED))
        finally:
            await client.aclose()
        return {entry.decode().rpartition("|")[2] for entry in entries}

    def announced(self, loss: Loss) -> bool:
        """Whether a bridge logged, after the loss, an error saying changes may be missed."""
        with self.log_path.open("rb") as log:
            log.seek(loss.log_offset)
            for raw in log:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if line.get("level") in ("error", "critical") and "missed" in raw.decode().lower():
                    return True
        return False

    async def stop(self) -> None:
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for process in self.bridges:
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.bridges:
            if process is not None:
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    process.kill()
        if self.redis is not None and self.redis.returncode is None:
            self.redis.terminate()
            await self.redis.wait()
        await self.receiver.stop()
        await self.trap.stop()
        if self.sim_runner is not None:
            await self.sim_runner.cleanup()
        self.log.close()


def schedule(rng: random.Random, rounds: int, include: Sequence[str] = ()) -> list[str]:
    """The faults of a run, in order: `include` first, then draws from a shuffled deck of
    every fault (each played once before any is played again), all shuffled together."""
    unknown = set(include) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    plan = list(include)[:rounds]
    deck: list[str] = []
    while len(plan) < rounds:
        if not deck:
            deck = [f for f in FAULTS if f not in plan or len(plan) >= len(FAULTS)]
            rng.shuffle(deck)
        plan.append(deck.pop())
    rng.shuffle(plan)
    return plan


async def gather_evidence(chaos: Chaos, first_change: int) -> Evidence:
    """What the run recorded, for the judge; data losses still open end now."""
    assert chaos.sim is not None
    losses = []
    for loss in chaos.losses:
        until = chaos.sim.tenant.last_change_seq if loss.until_seq is None else loss.until_seq
        losses.append(LossWindow(loss.after_seq, until, loss.pending))
    return Evidence(
        arrivals=chaos.receiver.arrivals,
        baseline=chaos.baseline,
        holdings=chaos.holdings(),
        changes=[
            *(
                (float(c.seq), c.enrollment_id)
                for c in chaos.sim.tenant.changes
                if c.kind == "course_enrollment" and c.seq > first_change
            ),
            *chaos.planted,
        ],
        losses=losses,
        hostile=dict(chaos.hostile),
        quarantined=await chaos.quarantined(),
    )


async def run_chaos(
    rounds: int,
    replicas: int,
    seed: int = 1,
    fault_s: float = 3.0,
    include: Sequence[str] = (),
) -> Report:
    """One chaos run, playing at least the faults in `include`; returns its report."""
    workdir = Path(tempfile.mkdtemp(prefix="absorb-chaos-"))
    chaos = Chaos(workdir, replicas, seed)
    report = Report(rounds=rounds, replicas=replicas)
    plan = schedule(chaos.rng, rounds, include)
    try:
        await chaos.start()
        assert chaos.sim is not None
        activity = chaos.sim.activity.per_second
        chaos.sim.activity.per_second = 0
        await asyncio.sleep(4)  # the baseline sweeps of every replica
        chaos.baseline = {rid: ce.status for rid, ce in chaos.sim.tenant.enrollments.items()}
        first_change = chaos.sim.tenant.last_change_seq
        chaos.sim.activity.per_second = activity
        for fault in plan:
            report.faults[fault] = report.faults.get(fault, 0) + 1
            felt = chaos.receiver.felt.get(fault.removeprefix("receiver_"), 0)
            await chaos.play(fault, fault_s)
            if (
                fault in FELT_BY_RECEIVER
                and chaos.receiver.felt.get(fault.removeprefix("receiver_"), 0) == felt
            ):
                report.unfelt_faults.append(fault)
            await asyncio.sleep(1)
        await chaos.finish(timeout_s=180)
        evidence = await gather_evidence(chaos, first_change)
        report.changes = sum(
            1
            for c in chaos.sim.tenant.changes
            if c.kind == "course_enrollment" and c.status is not None and c.seq > first_change
        )
    finally:
        await chaos.stop()
    _fill(report, chaos, evidence)
    if report.lost or report.problems:
        report.problems.insert(0, f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def _fill(report: Report, chaos: Chaos, evidence: Evidence) -> None:
    verdict = judge(evidence)
    report.delivered = verdict.delivered
    report.duplicates = verdict.duplicates
    report.max_delay_s = verdict.max_delay_s
    report.lost = verdict.lost
    report.missed_in_data_loss = verdict.missed_in_data_loss
    report.hostile = verdict.hostile
    report.problems += verdict.problems
    report.data_losses = len(chaos.losses)
    for n, loss in enumerate(chaos.losses, 1):
        if loss.took_s is not None:
            report.loss_windows_s.append(loss.took_s)
        if loss.until_seq is None:
            report.unrecovered_losses += 1
            report.problems.append(f"data loss {n}: the bridge never swept every course again")
        if not chaos.announced(loss):
            report.unannounced_losses += 1
            report.problems.append(f"data loss {n}: no error in the log said changes were missed")
    report.sent_elsewhere = len(chaos.trap.requests)
    for method, path, body in chaos.trap.requests[:5]:
        report.problems.append(f"sent to a redirect's Location: {method} {path} {body[:80]!r}")
    report.bad_signatures = chaos.receiver.bad_signatures
    if report.bad_signatures:
        report.problems.append(f"{report.bad_signatures} requests with a bad signature")
    for fault in report.unfelt_faults:
        report.problems.append(f"{fault}: the receiver answered no request while it played")


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
    failed = (
        report.lost
        or report.sent_elsewhere
        or report.bad_signatures
        or report.unannounced_losses
        or report.unrecovered_losses
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
