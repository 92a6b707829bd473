"""A delivering daemon killed at random moments, and a Redis restarted under it, loses nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import secrets
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from tests.conftest import API_KEY, PASSWORD, USERNAME, StartSimulator, free_port
from tests.engine import statuses_by_subject
from tests.receivers import Receiver

BRIDGE = [sys.executable, "-m", "bridge"]
#: The one event type the sink's route takes.
ROUTED = "absorb.course_enrollment.status_changed"


async def _wait_for_baselines(port: int, prefix: str, feed: str, *, courses: int) -> None:
    """Until every course scope of `feed` has finished its baseline sweep (at most 60 s)."""
    client = aioredis.Redis(port=port)
    try:
        for _ in range(600):
            scopes = await client.smembers(f"{prefix}:scopes:{feed}")
            states = [
                await client.hget(f"{prefix}:scope:{feed}:{scope.decode()}", "baseline")
                for scope in scopes
            ]
            if len(states) >= courses and all(state == b"done" for state in states):
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the bridge did not finish its baseline sweeps within 60 s")
    finally:
        await client.aclose()


async def _redis_server(
    port: int, workdir: Path, *, password: str | None = None
) -> asyncio.subprocess.Process:
    """A redis-server with an append-only file fsynced on every write, ready to use."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed; the test command installs it"
    auth = ["--requirepass", password] if password else []
    proc = await asyncio.create_subprocess_exec(
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
        "--appendonly", "yes", "--appendfsync", "always", "--save", "", *auth,
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    client = aioredis.Redis(port=port, password=password)
    for _ in range(100):
        try:
            await client.ping()
            break
        except aioredis.ConnectionError:
            await asyncio.sleep(0.05)
    await client.aclose()
    return proc


async def test_kill_and_restart_rounds_lose_nothing(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    """SIGKILL rounds mid-delivery and one Redis crash (AOF): every routed event reaches the
    receiver, in order per enrollment. The route filters, so each feed reads outbox entries
    and queues them in two steps, and a kill can fall between them."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    receiver = Receiver(secrets=[secret])
    hook = await receiver.start()
    sim = await start_simulator(users=50, courses=3)
    redis_port = free_port()
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis_proc = await _redis_server(redis_port, redis_dir)
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"""
absorb: {{base_url: "{sim.url}", api_key: "{API_KEY}", username: {USERNAME},
          password: "{PASSWORD}", max_requests_per_second: 200}}
redis: {{url: "redis://127.0.0.1:{redis_port}/0", prefix: crash}}
http: {{listen: "127.0.0.1:0"}}
feeds:
  - {{name: courses, resource: course_enrollments, interval: 300ms, max_interval: 300ms,
      lookback: 2s}}
sinks:
  - {{name: hook, type: http, url: "{hook}", secret: "{secret}", timeout: 2s,
      retry_schedule: [0, 100ms, 100ms, 200ms, 200ms, 500ms, 500ms, 1s, 1s, 1s, 1s, 1s]}}
routes:
  - {{sinks: [hook], types: [{ROUTED}]}}
"""
    )
    rng = random.Random(7)
    log = (tmp_path / "bridge.log").open("ab")
    # A consumer group that never reads holds every outbox entry back from trimming
    # (each start trims what every sink has), so the end can compare the whole outbox.
    witness = aioredis.Redis(port=redis_port)
    await witness.xgroup_create("crash:outbox", "witness", id="0", mkstream=True)
    await witness.aclose()

    async def start_bridge() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *BRIDGE, "run", "--config", str(config), stdout=log, stderr=log, env=os.environ.copy()
        )

    # The first sweep of each course is a silent baseline: let it finish before the
    # kills start, however slowly this machine starts a bridge, so the rounds have events.
    bridge = await start_bridge()
    await _wait_for_baselines(redis_port, "crash", "courses", courses=3)
    bridge.kill()
    await bridge.wait()
    await sim.control("PUT", "activity", {"per_second": 25})
    for round_ in range(8):
        await sim.control("POST", "activity/steps", {"steps": 15})
        bridge = await start_bridge()
        await asyncio.sleep(rng.uniform(0.5, 2.5))
        if round_ == 4:  # Redis dies hard and comes back with its append-only file
            redis_proc.kill()
            await redis_proc.wait()
            await asyncio.sleep(0.5)
            redis_proc = await _redis_server(redis_port, redis_dir)
            await asyncio.sleep(1.0)
        bridge.kill()
        await bridge.wait()
    await sim.control("PUT", "activity", {"per_second": 0})
    bridge = await start_bridge()
    client = aioredis.Redis(port=redis_port)
    await asyncio.sleep(3)  # let it start properly: a SIGTERM during imports is not a clean stop
    try:
        outbox: list[dict[str, Any]] = []
        for _ in range(300):
            await asyncio.sleep(0.1)
            entries = await client.xrange("crash:outbox")
            every = [json.loads(fields[b"event"]) for _, fields in entries]
            outbox = [e for e in every if e["type"] == ROUTED]
            if outbox and {e["id"] for e in outbox} <= set(receiver.ids()):
                break
        bridge.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(bridge.wait(), 30) == 0
    finally:
        await client.aclose()
        redis_proc.terminate()
        await redis_proc.wait()
        log.close()
        await receiver.stop()
    assert len(outbox) > 30, "too little happened to prove anything"
    missing = {e["id"] for e in outbox} - set(receiver.ids())
    assert not missing, f"{len(missing)} events never reached the receiver"
    assert receiver.problems == []
    firsts: dict[str, dict[str, Any]] = {}
    for event in receiver.accepted:
        firsts.setdefault(str(event["id"]), event)
    got = {s: [e["id"] for e in c] for s, c in statuses_by_subject(list(firsts.values())).items()}
    want = {s: [e["id"] for e in c] for s, c in statuses_by_subject(outbox).items()}
    assert got == want, "a subject's events arrived out of order"
