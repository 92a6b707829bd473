"""Redis loses the bridge's data under a running bridge: it notices, recovers and carries on."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from structlog.typing import EventDict

from bridge import metrics
from bridge.config import HttpSinkConfig
from bridge.service import Bridge
from bridge.sinks.file import FileSink
from bridge.sinks.http import HttpSink
from tests.conftest import MakeClient, StartSimulator, free_port
from tests.receivers import Receiver
from tests.test_supervision import (
    FAST,
    baselined,
    change_one,
    file_subjects,
    make_bridge,
    until,
)

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


async def _redis_without_persistence(
    port: int, workdir: Path, *options: str
) -> asyncio.subprocess.Process:
    """A redis-server that keeps nothing on disk, answering on `port`."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed; the test command installs it"
    proc = await asyncio.create_subprocess_exec(
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
        "--save", "", "--appendonly", "no", *options, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    client = aioredis.Redis(port=port)
    try:
        await until(lambda: _pings(client), "redis-server to answer", timeout_s=10)
    finally:
        await client.aclose()
    return proc


async def _pings(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except aioredis.ConnectionError:
        return False


@pytest.fixture
async def private_redis(
    tmp_path: Path,
) -> AsyncIterator[tuple[int, list[asyncio.subprocess.Process]]]:
    """A Redis server of this test alone (its port and process, replaced on restart)."""
    port = free_port()
    procs = [await _redis_without_persistence(port, tmp_path)]
    yield port, procs
    for proc in procs:
        if proc.returncode is None:
            proc.kill()  # its data is of no use any more
            await proc.wait()


def _lost_count() -> float:
    return sum(
        s.value
        for family in metrics.REDIS_DATA_LOST.collect()
        for s in family.samples
        if s.name.endswith("_total")
    )


async def _carries_on_after(
    lose: Callable[[aioredis.Redis, list[asyncio.subprocess.Process]], Awaitable[None]],
    port: int,
    procs: list[asyncio.subprocess.Process],
    start_simulator: StartSimulator,
    make_client: MakeClient,
    tmp_path: Path,
) -> list[EventDict]:
    """Run a bridge with an http and a file sink, lose Redis's data, and check that changes
    made after the new baseline reach both sinks; returns the logs from the loss on."""
    sim = await start_simulator(users=30, courses=3)
    receiver = Receiver(secrets=[SECRET])
    url = await receiver.start()
    hook = HttpSink(
        HttpSinkConfig.model_validate(
            {"name": "hook", "type": "http", "url": url, "secret": SECRET, "timeout": "2s",
             "retry_schedule": ["0s", "100ms", "200ms", "500ms", "1s"]}
        )
    )  # fmt: skip
    path = tmp_path / "audit.jsonl"
    redis = aioredis.Redis(port=port)
    bridge: Bridge = make_bridge(
        make_client(sim.url), redis, sim, [hook, FileSink("audit", path)], prefix="loss"
    )
    try:
        await bridge.start()
        await until(lambda: baselined(bridge), "the first baseline")
        before = await change_one(sim, 0)
        await until(lambda: _arrived(before, receiver, path), "a change before the loss")
        lost_before = _lost_count()
        with structlog.testing.capture_logs() as logs:
            await lose(redis, procs)
            await until(lambda: _true(_lost_count() > lost_before), "the loss to be noticed")
            await until(lambda: baselined(bridge), "the new baseline")
            after = await change_one(sim, 1)
            await until(lambda: _arrived(after, receiver, path), "a change after the loss")
            assert bridge.readiness()[0], bridge.readiness()[1]
    finally:
        await bridge.stop()
        await redis.aclose()
        await receiver.stop()
    assert receiver.problems == []
    assert _lost_count() == lost_before + 1
    return logs


async def _arrived(rid: str, receiver: Receiver, path: Path) -> bool:
    at_hook = any(
        e["subject"] == rid and e["type"].endswith("status_changed") for e in receiver.accepted
    )
    return at_hook and rid in file_subjects(path)


async def _true(value: bool) -> bool:
    return value


async def _flushall(redis: aioredis.Redis, _procs: list[asyncio.subprocess.Process]) -> None:
    await redis.flushall()


async def test_flushall_under_a_running_bridge(
    private_redis: tuple[int, list[asyncio.subprocess.Process]],
    start_simulator: StartSimulator,
    make_client: MakeClient,
    tmp_path: Path,
) -> None:
    """After FLUSHALL the bridge says changes may have been missed, recreates its consumer
    groups, baselines again, and delivers later changes to an http and a file sink."""
    port, procs = private_redis
    logs = await _carries_on_after(_flushall, port, procs, start_simulator, make_client, tmp_path)
    [lost] = [e for e in logs if e["event"] == "redis.data_lost"]
    assert lost["log_level"] == "error"
    assert "may have been missed" in lost["error"]


async def test_restart_without_persistence_under_a_running_bridge(
    private_redis: tuple[int, list[asyncio.subprocess.Process]],
    start_simulator: StartSimulator,
    make_client: MakeClient,
    tmp_path: Path,
) -> None:
    """Redis restarts empty on the same port: the bridge rides out the outage, notices the
    data is gone, and delivers later changes to an http and a file sink."""
    port, procs = private_redis

    async def restart(_redis: aioredis.Redis, procs: list[asyncio.subprocess.Process]) -> None:
        procs[-1].kill()
        await procs[-1].wait()
        procs.append(await _redis_without_persistence(port, tmp_path))

    logs = await _carries_on_after(restart, port, procs, start_simulator, make_client, tmp_path)
    assert [e for e in logs if e["event"] == "redis.data_lost"]


async def test_redis_that_can_lose_data_is_warned_about_once(
    private_redis: tuple[int, list[asyncio.subprocess.Process]],
    start_simulator: StartSimulator,
    make_client: MakeClient,
) -> None:
    """A Redis without persistence and with an evicting maxmemory-policy gets one warning
    naming both settings, however often stats are refreshed."""
    port, _ = private_redis
    sim = await start_simulator(users=5, courses=1)
    redis = aioredis.Redis(port=port)
    await redis.config_set("maxmemory-policy", "allkeys-lru")
    bridge = make_bridge(make_client(sim.url), redis, sim, [], prefix="warn")
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                await bridge.refresh_stats()
        [warning] = [e for e in logs if e["event"] == "redis.data_at_risk"]
        text = " ".join(warning["problems"])
        assert "appendonly" in text
        assert "allkeys-lru" in text
        await redis.config_set("appendonly", "yes")
        await redis.config_set("maxmemory-policy", "noeviction")
        quiet = make_bridge(make_client(sim.url), redis, sim, [], prefix="warn")
        with structlog.testing.capture_logs() as logs:
            await quiet.refresh_stats()
        assert not [e for e in logs if e["event"] == "redis.data_at_risk"]
    finally:
        await redis.aclose()


async def test_redis_whose_config_cannot_be_read_is_said_to_be_unchecked(
    tmp_path: Path, start_simulator: StartSimulator, make_client: MakeClient
) -> None:
    """With CONFIG renamed away (as managed services do), the bridge says it could not check
    Redis's persistence and eviction, once, and goes on."""
    port = free_port()
    proc = await _redis_without_persistence(port, tmp_path, "--rename-command", "CONFIG", "")
    sim = await start_simulator(users=5, courses=1)
    redis = aioredis.Redis(port=port)
    bridge = make_bridge(make_client(sim.url), redis, sim, [], prefix="unchecked")
    try:
        with structlog.testing.capture_logs() as logs:
            await bridge.refresh_stats()
            await bridge.refresh_stats()
        [unchecked] = [e for e in logs if e["event"] == "redis.settings_unchecked"]
        assert "appendonly" in unchecked["reason"]
        assert not [e for e in logs if e["event"] == "redis.data_at_risk"]
        assert bridge.health["redis"] == "ok"
    finally:
        await redis.aclose()
        proc.kill()
        await proc.wait()


@pytest.mark.parametrize("noticed", ["before the sweep ends", "after the sweep ends"])
async def test_a_sweep_that_outlives_the_loss_does_not_fake_a_baseline(
    private_redis: tuple[int, list[asyncio.subprocess.Process]],
    start_simulator: StartSimulator,
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
    noticed: str,
) -> None:
    """Redis loses its data just before a sweep marks its baseline done: the mark, with no
    snapshot behind it, is forgotten, so the next sweep baselines quietly instead of
    reporting every record of the course as created."""
    port, _ = private_redis
    sim = await start_simulator(users=30, courses=1)
    redis = aioredis.Redis(port=port)
    bridge = make_bridge(make_client(sim.url), redis, sim, [], prefix="late")
    try:
        await bridge.check_redis_data()
        assert await bridge.sweep_once(force=True) == 1
        original = bridge.sweeper.sweep

        async def outlived(scope: Any, token: str, *, full: bool = False) -> Any:
            result = await original(scope, token, full=full)
            await redis.flushall()
            await bridge.store.set_scope_state(scope.feed.name, scope.key, {"baseline": "done"})
            if noticed == "before the sweep ends":
                assert await bridge.check_redis_data()
            return result

        monkeypatch.setattr(bridge.sweeper, "sweep", outlived)
        await bridge.sweep_once(force=True)
        monkeypatch.setattr(bridge.sweeper, "sweep", original)
        if noticed == "after the sweep ends":
            assert await bridge.check_redis_data()
        assert await bridge.sweep_once(force=True) == 1
        assert await bridge.store.outbox_length() == 0
    finally:
        await redis.aclose()


async def test_a_missing_consumer_group_is_noticed_at_once(
    private_redis: tuple[int, list[asyncio.subprocess.Process]],
    start_simulator: StartSimulator,
    make_client: MakeClient,
    tmp_path: Path,
) -> None:
    """With the periodic check far off, a sink's NOGROUP alone makes the bridge notice the
    loss, recreate the group and deliver again."""
    port, _ = private_redis
    sim = await start_simulator(users=30, courses=2)
    redis = aioredis.Redis(port=port)
    path = tmp_path / "audit.jsonl"
    timing = dataclasses.replace(FAST, stats_interval_s=600.0)
    bridge = make_bridge(
        make_client(sim.url), redis, sim, [FileSink("audit", path)], prefix="nogroup",
        timing=timing,
    )  # fmt: skip
    lost_before = _lost_count()
    try:
        await bridge.start()
        await until(lambda: baselined(bridge), "the first baseline")
        with structlog.testing.capture_logs() as logs:
            await redis.flushall()
            await until(lambda: _true(_lost_count() > lost_before), "the loss to be noticed")
            await until(lambda: baselined(bridge), "the new baseline")
            rid = await change_one(sim)
            await until(lambda: _true(rid in file_subjects(path)), "a change after the loss")
    finally:
        await bridge.stop()
        await redis.aclose()
    assert any("NOGROUP" in e.get("error", "") for e in logs if e["event"] == "loop.failed")
    assert [e for e in logs if e["event"] == "redis.data_lost"]
