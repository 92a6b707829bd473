"""Each running replica's loop health, kept in Redis so `status` can read it without the daemon.

The stats loop of every `run` process writes one key (`keys.replica`) with its
host, pid, the time and its dead and stalled loops, and a TTL of a few stats
periods: a replica that is gone, or whose stats loop stopped, disappears by itself.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from bridge import clock, keys


def replica_id() -> str:
    """An id for this process, unique among replicas: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class LoopHealth:
    """What one replica says of its loops at one moment."""

    replica: str
    at: float
    loops: int
    dead: dict[str, str] = field(default_factory=dict)
    stalled: dict[str, str] = field(default_factory=dict)


async def publish(redis: Redis, prefix: str, health: LoopHealth, ttl_s: float) -> None:
    """Write a replica's loop health; it expires unless written again within `ttl_s`.

    The replica is also listed (with the time) so `read_all` finds every replica
    without scanning the keyspace; entries older than `ttl_s` leave the list here.
    """
    ttl_ms = max(1, int(ttl_s * 1000))
    now_ms = int(health.at * 1000)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(keys.replica(prefix, health.replica), orjson.dumps(asdict(health)), px=ttl_ms)
        pipe.zadd(keys.replicas(prefix), {health.replica: now_ms})
        pipe.zremrangebyscore(keys.replicas(prefix), "-inf", now_ms - ttl_ms)
        await pipe.execute()


async def withdraw(redis: Redis, prefix: str, replica: str) -> None:
    """Remove a replica's loop health: it stopped cleanly."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.replica(prefix, replica))
        pipe.zrem(keys.replicas(prefix), replica)
        await pipe.execute()


async def read_all(redis: Redis, prefix: str) -> list[dict[str, Any]]:
    """Every live replica's loop health, with its age in seconds; unreadable entries skipped."""
    listed = [_text(r) for r in await redis.zrange(keys.replicas(prefix), 0, -1)]
    if not listed:
        return []
    values = await redis.mget([keys.replica(prefix, r) for r in listed])
    found: list[dict[str, Any]] = []
    now = clock.now().timestamp()
    for raw in values:
        try:
            data = orjson.loads(raw) if raw is not None else None
        except orjson.JSONDecodeError:
            continue
        if not isinstance(data, dict):
            continue
        data["age_s"] = round(max(0.0, now - float(data.get("at", now))), 1)
        found.append(data)
    return sorted(found, key=lambda d: str(d.get("replica")))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
