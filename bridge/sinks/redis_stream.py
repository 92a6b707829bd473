"""The `redis_stream` sink: XADD each event to a Redis stream, CloudEvents binary-mode style.

Each entry carries the event's attributes as `ce_<name>` fields (`ce_id`,
`ce_type`, `ce_subject`, `ce_status`, ...), `content-type` and the event's
`data` as JSON text: the layout CloudEvents bindings use for key-value
transports, so a consumer reads attributes without parsing the payload.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.config import RedisStreamSinkConfig, mask_url
from bridge.redaction import mask
from bridge.sinks.base import Delivery, SinkError

#: The attributes written first, in this order; any other attribute follows them.
ORDER = ("specversion", "id", "source", "type", "subject", "time", "status", "previousstatus")
_NOT_ATTRIBUTES = frozenset((*ORDER, "data", "datacontenttype"))
CONNECT_TIMEOUT_S = 5.0
TIMEOUT_S = 10.0


class RedisStreamSink:
    """Appends each event to `config.stream` (trimmed to about `maxlen` entries when set).

    It has a connection of its own, to `config.url` or else the bridge's own Redis
    (`default_url`). redis-py's own retries are cut to one immediate reconnect: the
    delivery worker owns retrying, on the sink's schedule.
    """

    def __init__(self, config: RedisStreamSinkConfig, default_url: str) -> None:
        self.name = config.name
        self.last_reply = ""
        self.config = config
        self.url = config.url or default_url
        self._redis: aioredis.Redis | None = None
        self._secrets = [urlsplit(self.url).password]

    async def start(self) -> None:
        """Create the Redis client (it connects on the first command)."""
        if self._redis is not None:
            return
        try:
            self._redis = aioredis.Redis.from_url(
                self.url,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=TIMEOUT_S,
                retry=Retry(NoBackoff(), 1),
            )
        except (ValueError, RedisError) as e:
            where = mask_url(self.url)
            raise SinkError(self.name, f"cannot use {where}: {self._text(e)}") from None

    async def send(self, delivery: Delivery) -> None:
        """XADD the event; raise SinkError unless Redis stored it."""
        (error,) = await self.send_many([delivery])
        if error is not None:
            raise error

    async def send_many(self, deliveries: Sequence[Delivery]) -> list[SinkError | None]:
        """XADD every event in one round trip; an outcome per event (None: Redis stored it)."""
        if self._redis is None:
            await self.start()
        assert self._redis is not None
        # A pipeline written by hand: redis-py's own spends more time framing the
        # arguments of every XADD than Redis spends running them.
        commands = b"".join(
            xadd_command(self.config.stream, self.config.maxlen, stream_fields(d.event))
            for d in deliveries
        )
        try:
            replies = await _pipeline(self._redis, commands, len(deliveries))
        except RedisError as e:
            return [self._error(e)] * len(deliveries)
        if isinstance(replies[-1], bytes):
            self.last_reply = f"stored in stream {self.config.stream} as {replies[-1].decode()}"
        return [self._error(r) if isinstance(r, ResponseError) else None for r in replies]

    def _error(self, error: Exception) -> SinkError:
        return SinkError(self.name, f"cannot XADD to {self.config.stream}: {self._text(error)}")

    async def close(self) -> None:
        """Close the client."""
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    def _text(self, error: Exception) -> str:
        # redis-py names host and port, not the password; masking keeps it that way.
        return mask(f"{type(error).__name__}: {error}", self._secrets)


def stream_fields(event: dict[str, Any]) -> dict[str, str]:
    """The stream entry for an event: `ce_` attributes, `content-type`, `data` as JSON text."""
    fields = {}
    for name in ORDER:
        if (value := event.get(name)) is not None:
            fields[f"ce_{name}"] = value if isinstance(value, str) else json.dumps(value)
    for name, value in event.items():
        if name not in _NOT_ATTRIBUTES and value is not None:
            fields[f"ce_{name}"] = value if isinstance(value, str) else json.dumps(value)
    fields["content-type"] = str(event.get("datacontenttype") or "application/json")
    fields["data"] = _json_text(event.get("data"))
    return fields


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # integers beyond 64 bits: the stdlib writes them
        return json.dumps(value, separators=(",", ":"))


def xadd_command(stream: str, maxlen: int | None, fields: dict[str, str]) -> bytes:
    """One `XADD` (trimmed to about `maxlen` when given) in the Redis protocol."""
    parts = [_xadd_head(stream, maxlen, len(fields))]
    for name, value in fields.items():
        data = value.encode()
        parts += (_bulk(name), b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


@functools.lru_cache(maxsize=64)
def _xadd_head(stream: str, maxlen: int | None, fields: int) -> bytes:
    # The same few heads and field names come back for every event: frame them once.
    trim = ("MAXLEN", "~", str(maxlen)) if maxlen is not None else ()
    args = ("XADD", stream, *trim, "*")
    return b"*%d\r\n" % (len(args) + 2 * fields) + b"".join(_bulk(arg) for arg in args)


@functools.lru_cache(maxsize=256)
def _bulk(text: str) -> bytes:
    data = text.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


async def _pipeline(
    redis: aioredis.Redis, commands: bytes, count: int
) -> list[ResponseError | bytes]:
    """Write `count` pipelined commands, then read a reply to each: the entry id, or the error."""
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]  # untyped upstream
    try:
        # Sent once: a resend after a failure halfway would append the batch again. The
        # delivery worker tries the failed events again on the sink's schedule.
        return await _round_trip(connection, commands, count)
    except BaseException:
        # Cancelled or failed halfway: replies may be left unread on the connection.
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


async def _round_trip(
    connection: AbstractConnection, commands: bytes, count: int
) -> list[ResponseError | bytes]:
    await connection.send_packed_command(commands)
    replies: list[ResponseError | bytes] = []
    # One deadline for all the replies: a timer per reply costs as much as reading it.
    try:
        async with asyncio.timeout(TIMEOUT_S):
            for _ in range(count):
                try:
                    reply = await connection.read_response(disable_decoding=True, timeout=math.inf)
                except ResponseError as e:  # this command failed, the others stand
                    replies.append(e)
                else:
                    replies.append(reply if isinstance(reply, bytes) else b"")
    except TimeoutError:
        raise RedisTimeoutError(f"no reply within {TIMEOUT_S:g}s") from None
    return replies
