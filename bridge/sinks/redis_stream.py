"""The `redis_stream` sink: XADD each event to a Redis stream, CloudEvents binary-mode style.

Each entry carries the event's attributes as `ce_<name>` fields (`ce_id`,
`ce_type`, `ce_subject`, `ce_status`, ...), `content-type` and the event's
`data` as JSON text: the layout CloudEvents bindings use for key-value
transports, so a consumer reads attributes without parsing the payload.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from bridge.config import RedisStreamSinkConfig, mask_url
from bridge.redaction import mask
from bridge.sinks.base import Delivery, SinkError

#: The attributes written first, in this order; any other attribute follows them.
ORDER = ("specversion", "id", "source", "type", "subject", "time", "status", "previousstatus")
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
        if self._redis is None:
            await self.start()
        assert self._redis is not None
        try:
            await self._redis.xadd(
                self.config.stream,
                stream_fields(delivery.event),  # type: ignore[arg-type]  # str->str is fine
                maxlen=self.config.maxlen,
                approximate=True,
            )
        except RedisError as e:
            raise SinkError(
                self.name, f"cannot XADD to {self.config.stream}: {self._text(e)}"
            ) from None

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
    names = [k for k in ORDER if k in event] + [k for k in event if k not in ORDER]
    fields = {
        f"ce_{name}": value if isinstance(value, str) else json.dumps(value)
        for name in names
        if name not in ("data", "datacontenttype") and (value := event[name]) is not None
    }
    fields["content-type"] = str(event.get("datacontenttype") or "application/json")
    fields["data"] = json.dumps(event.get("data"), separators=(",", ":"))
    return fields
