"""Running it in production: readiness through a Redis outage, metrics, clean stops, no secrets."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY, PASSWORD, USERNAME, StartSimulator, free_port
from tests.receivers import Receiver
from tests.test_delivery_crash import _redis_server

BRIDGE = [sys.executable, "-m", "bridge"]
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"operations-secret-0123456").decode()
BEARER = "bearer-" + secrets.token_hex(8)
REDIS_PASSWORD = "redis-pw-" + secrets.token_hex(6)
SECRETS = (API_KEY, PASSWORD, WEBHOOK_SECRET, BEARER, REDIS_PASSWORD)


async def _get(url: str) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as reply:
            return reply.status, await reply.text()
    except aiohttp.ClientError:
        return 0, ""


async def _until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


async def test_outage_metrics_stop_and_secrets(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    """Redis dies and returns under a running bridge: not ready, then ready, nothing lost."""
    receiver = Receiver(secrets=[WEBHOOK_SECRET])
    hook = await receiver.start()
    sim = await start_simulator(users=50, courses=3)
    redis_port, http_port = free_port(), free_port()
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis_proc = await _redis_server(redis_port, redis_dir, password=REDIS_PASSWORD)
    (tmp_path / "password").write_text(PASSWORD + "\n")
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"""
absorb: {{base_url: "{sim.url}", api_key: "${{KEY}}", username: {USERNAME},
          password_file: "{tmp_path / "password"}", max_requests_per_second: 200}}
redis: {{url: "redis://:${{REDIS_PW}}@127.0.0.1:{redis_port}/0", prefix: ops}}
http: {{listen: "127.0.0.1:{http_port}"}}
feeds:
  - {{name: courses, resource: course_enrollments, interval: 500ms, max_interval: 500ms,
      lookback: 3s}}
sinks:
  - {{name: hook, type: http, url: "{hook}", secret: "${{HOOK_SECRET}}",
      bearer_token: "${{BEARER}}", timeout: 2s, retry_schedule: [0, 200ms, 500ms, 1s, 1s, 1s]}}
routes:
  - sinks: [hook]
"""
    )
    env = {
        **os.environ,
        "KEY": API_KEY,
        "REDIS_PW": REDIS_PASSWORD,
        "HOOK_SECRET": WEBHOOK_SECRET,
        "BEARER": BEARER,
    }
    base = f"http://127.0.0.1:{http_port}"
    log_path = tmp_path / "bridge.log"
    with log_path.open("wb") as log:
        bridge = await asyncio.create_subprocess_exec(
            *BRIDGE, "run", "--config", str(config), env=env, stdout=log, stderr=log
        )
        try:
            await _until(lambda: _ready(base, 200), 30, "the bridge to become ready")
            _, before = await _get(f"{base}/metrics")
            await sim.control("PUT", "activity", {"per_second": 20})
            await _until(lambda: _has_events(receiver), 30, "the first deliveries")
            _, during = await _get(f"{base}/metrics")
            for name in (
                "absorb_bridge_events_emitted_total",
                "absorb_bridge_delivery_attempts_total",
                "absorb_bridge_sweeps_total",
                "absorb_bridge_absorb_requests_total",
            ):
                assert _total(_samples(during), name) > _total(_samples(before), name), name
            cycles = {
                dict(labels)["loop"]: value
                for (name, labels), value in _samples(during).items()
                if name == "absorb_bridge_loop_last_cycle_timestamp_seconds"
            }
            for loop in ("schedule", "discovery:courses", "feed:hook", "deliver:hook:1", "stats"):
                assert cycles.get(loop, 0) > time.time() - 60, loop
            redis_proc.kill()
            await redis_proc.wait()
            await _until(lambda: _ready(base, 503), 30, "the bridge to report not ready")
            _, body = await _get(f"{base}/readyz")
            assert json.loads(body)["checks"]["redis"] != "ok"
            assert (await _get(f"{base}/healthz"))[0] == 200  # alive all the same
            await asyncio.sleep(2)
            redis_proc = await _redis_server(redis_port, redis_dir, password=REDIS_PASSWORD)
            await _until(lambda: _ready(base, 200), 40, "the bridge to recover")
            await asyncio.sleep(2)  # sweeping and delivering again, mid-flight
            started = time.monotonic()
            bridge.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(bridge.wait(), 30) == 0
            assert time.monotonic() - started < 15, "the stop took longer than the grace period"
            await sim.control("PUT", "activity", {"per_second": 0})
            # A restart delivers whatever the stop left in the outbox.
            bridge = await asyncio.create_subprocess_exec(
                *BRIDGE, "run", "--config", str(config), env=env, stdout=log, stderr=log
            )
            await _until(lambda: _ready(base, 200), 30, "the restarted bridge to become ready")
            client = aioredis.Redis(port=redis_port, password=REDIS_PASSWORD)
            outbox: list[str] = []

            async def all_delivered() -> bool:
                nonlocal outbox
                entries = await client.xrange("ops:outbox")
                outbox = [json.loads(f[b"event"])["id"] for _, f in entries]
                return bool(outbox) and set(outbox) <= set(receiver.ids())

            await _until(all_delivered, 40, "every outbox event at the receiver")
            await client.aclose()
            bridge.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(bridge.wait(), 30) == 0
        finally:
            if bridge.returncode is None:
                bridge.kill()
            redis_proc.terminate()
            await redis_proc.wait()
            await receiver.stop()
    assert receiver.problems == []
    assert receiver.headers[0]["authorization"] == f"Bearer {BEARER}"
    outputs = [log_path.read_text()]
    outputs += await _commands(config, env, redis_dir, redis_port)
    for text in outputs:
        for secret in SECRETS:
            assert secret not in text


async def _commands(config: Path, env: dict[str, str], redis_dir: Path, port: int) -> list[str]:
    """check-config, status (table and JSON) and a failing command's output."""
    redis_proc = await _redis_server(port, redis_dir, password=REDIS_PASSWORD)
    texts = []
    try:
        for args in (
            ["check-config"],
            ["status"],
            ["status", "--json"],
            ["replay", "--sink", "nope"],
        ):
            proc = await asyncio.create_subprocess_exec(
                *BRIDGE, *args, "--config", str(config), env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            texts.append(out.decode() + err.decode())
    finally:
        redis_proc.terminate()
        await redis_proc.wait()
    assert "***" in texts[0]
    return texts


async def _ready(base: str, want: int) -> bool:
    return (await _get(f"{base}/readyz"))[0] == want


async def _has_events(receiver: Receiver) -> bool:
    return len(receiver.accepted) >= 5
