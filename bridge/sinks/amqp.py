"""The `amqp` sink: each event published to a RabbitMQ exchange, confirmed before it counts.

The message is the CloudEvent in structured mode (content type
`application/cloudevents+json`, persistent), with `message_id` the event id and
`type` the event type; the `cloudEvents:id`, `cloudEvents:type` and
`cloudEvents:subject` headers repeat those attributes, as the CloudEvents AMQP
binding names its application properties. It is published `mandatory` on a
channel with publisher confirms, so an event counts as delivered only when the
broker routed it to a queue and confirmed it; a message no queue takes, a
missing exchange, a lost connection or a missing confirm is a `SinkError`.

aio-pika's robust connection reconnects by itself; while it does, sends fail at
once and the delivery worker tries again on the sink's schedule. A channel the
broker closed (a missing exchange does that) is replaced by a fresh one on the
next send. The URL's password never appears in an error or a log line.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import structlog

from bridge import clock
from bridge.config import AmqpSinkConfig, mask_url
from bridge.redaction import mask
from bridge.sinks.base import Delivery, SinkError

if TYPE_CHECKING:
    from aio_pika import Message
    from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
    from pamqp.common import FieldValue

log = structlog.get_logger(__name__)

STRUCTURED = "application/cloudevents+json"
#: The CloudEvents attributes repeated as `cloudEvents:<name>` headers.
HEADER_ATTRIBUTES = ("id", "type", "subject")
INSTALL_HINT = "pip install 'absorb-bridge[amqp]'"
CONNECT_TIMEOUT_S = 10.0
#: How long a publish waits for the broker's confirm.
CONFIRM_TIMEOUT_S = 10.0


class AmqpSink:
    """Publishes each event to `config.exchange` ("": the default exchange), awaiting confirms."""

    def __init__(
        self, config: AmqpSinkConfig, *, connect_timeout_s: float = CONNECT_TIMEOUT_S
    ) -> None:
        self.name = config.name
        self.last_reply = ""
        self.config = config
        self.connect_timeout_s = connect_timeout_s
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._lock = asyncio.Lock()
        self._failed_at: float | None = None
        self._failure = ""
        # Publishes go one at a time until one went through on the channel: see `send`.
        self._careful = True
        self._publishing = asyncio.Lock()
        password = urlsplit(config.url).password
        self._secrets = [password, unquote(password) if password else None]
        self._where = mask_url(config.url)

    async def start(self) -> None:
        """Connect and open a channel with publisher confirms; SinkError if the broker says no."""
        if self._connection is not None:
            return
        try:
            import aio_pika
            from aiormq.exceptions import AMQPError
        except ImportError:
            raise SinkError(self.name, f"needs aio-pika: {INSTALL_HINT}") from None
        connection: AbstractRobustConnection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                connection = await aio_pika.connect_robust(
                    self.config.url,
                    timeout=self.connect_timeout_s,
                    client_properties={"connection_name": f"absorb-bridge {self.name}"},
                )
                await self._open_channel(connection)
        except (TimeoutError, AMQPError, OSError) as e:
            if connection is not None:
                await self._quietly_close(connection)
            raise SinkError(
                self.name,
                f"cannot connect to {self._where}: {self._text(e)}; "
                "check the URL, credentials and virtual host",
            ) from None
        self._connection = connection

    async def _open_channel(self, connection: AbstractRobustConnection) -> None:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._channel = channel
        self._exchange = (
            channel.default_exchange
            if not self.config.exchange
            # Not declared: the exchange is the operator's; a missing one fails each send.
            else await channel.get_exchange(self.config.exchange, ensure=False)
        )
        self._careful = True

    async def send(self, delivery: Delivery) -> None:
        """Publish the event and wait for the broker's confirm; SinkError unless it was routed.

        Until a publish has gone through on a channel, publishes wait for each
        other: a missing exchange makes the broker close the channel, and other
        publishes racing that close make it drop the whole connection.
        """
        channel, exchange = await self._ready()
        routing_key = self._routing_key(delivery)
        exchange_name = repr(self.config.exchange) if self.config.exchange else "the default"
        where = f"{exchange_name} exchange with routing key {routing_key!r}"
        from aiormq.exceptions import (
            AMQPChannelError,
            AMQPError,
            ChannelInvalidStateError,
            ChannelNotFoundEntity,
            DeliveryError,
            PublishError,
        )

        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT_S):
                if self._careful:
                    async with self._publishing:
                        await self._publish(channel, exchange, delivery, routing_key)
                else:
                    await self._publish(channel, exchange, delivery, routing_key)
        except PublishError:
            self._careful = False
            raise SinkError(
                self.name,
                f"no queue takes messages sent to {where}: bind a queue to the exchange "
                "for that key, or change the sink's routing_key",
            ) from None
        except DeliveryError as e:
            self._careful = False
            raise SinkError(
                self.name, f"the broker refused the message sent to {where}: {self._text(e)}"
            ) from None
        except (AMQPChannelError, ChannelInvalidStateError) as e:
            await self._drop_channel(channel)
            if isinstance(e, ChannelNotFoundEntity):
                reason = (
                    f"exchange {self.config.exchange!r} does not exist: declare it on the "
                    "broker, or change the sink's exchange"
                )
            elif isinstance(e, ChannelInvalidStateError):
                reason = (
                    f"the channel closed after an error or a lost connection; not sent to {where}"
                )
            else:
                reason = f"the broker closed the channel ({self._text(e)}); not sent to {where}"
            raise SinkError(self.name, reason) from None
        except TimeoutError:
            raise SinkError(
                self.name, f"no confirm from the broker within {CONFIRM_TIMEOUT_S:g} s for {where}"
            ) from None
        except (AMQPError, OSError) as e:
            await self._drop_channel(channel)
            raise SinkError(self.name, f"cannot publish to {where}: {self._text(e)}") from None
        self._careful = False
        self.last_reply = f"routed and confirmed by the broker ({where})"

    async def _publish(
        self, channel: AbstractChannel, exchange: AbstractExchange, delivery: Delivery, key: str
    ) -> None:
        if channel.is_closed:
            from aiormq.exceptions import ChannelInvalidStateError

            raise ChannelInvalidStateError("the channel was closed")
        await exchange.publish(message(delivery), key, mandatory=True, timeout=CONFIRM_TIMEOUT_S)

    async def _ready(self) -> tuple[AbstractChannel, AbstractExchange]:
        """An open channel and its exchange: connecting on first use, replacing a closed channel."""
        async with self._lock:
            if self._connection is None:
                await self._start_unless_just_failed()
            connection = self._connection
            assert connection is not None
            channel, exchange = self._channel, self._exchange
            if channel is not None and exchange is not None and not channel.is_closed:
                return channel, exchange
            if not connection.connected.is_set():
                raise SinkError(self.name, f"not connected to {self._where} (reconnecting)")
            from aiormq.exceptions import AMQPError

            await self._drop_channel()
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    await self._open_channel(connection)
            except (TimeoutError, AMQPError, OSError) as e:
                raise SinkError(
                    self.name, f"cannot open a channel on {self._where}: {self._text(e)}"
                ) from None
            assert self._channel is not None
            assert self._exchange is not None
            return self._channel, self._exchange

    async def _start_unless_just_failed(self) -> None:
        """`start`, unless it failed moments ago (then fail at once with the same error)."""
        if self._failed_at is not None and (
            clock.monotonic() - self._failed_at < self.connect_timeout_s
        ):
            raise SinkError(self.name, self._failure)
        try:
            await self.start()
        except SinkError as e:
            self._failed_at = clock.monotonic()
            self._failure = str(e).removeprefix(f"sink {self.name}: ")
            raise

    async def _drop_channel(self, channel: AbstractChannel | None = None) -> None:
        """Close a channel (default: the current one) for good, so the next send opens another.

        The robust connection would reopen it by itself, racing the publishes that
        find it reopened: a fresh channel is predictable.
        """
        if channel is None or channel is self._channel:
            channel, self._channel, self._exchange = self._channel, None, None
        if channel is None:
            return
        from aiormq.exceptions import AMQPError

        try:
            await channel.close()
        except (TimeoutError, AMQPError, OSError) as e:
            log.debug("amqp.channel_close_failed", sink=self.name, error=self._text(e))

    def _routing_key(self, delivery: Delivery) -> str:
        try:
            return self.config.routing_key.format(**delivery.template_values())
        except (KeyError, IndexError, ValueError) as e:
            raise SinkError(
                self.name, f"routing key template {self.config.routing_key!r}: {e}"
            ) from None

    async def close(self) -> None:
        """Close the connection (and its channel); safe to call twice."""
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None:
            await self._quietly_close(connection)

    async def _quietly_close(self, connection: AbstractRobustConnection) -> None:
        from aiormq.exceptions import AMQPError

        try:
            await connection.close()
        except (TimeoutError, AMQPError, OSError) as e:
            log.debug("amqp.close_failed", sink=self.name, error=self._text(e))

    def _text(self, error: BaseException) -> str:
        return mask(str(error) or type(error).__name__, self._secrets)


def message(delivery: Delivery) -> Message:
    """The AMQP message for an event: structured CloudEvent, persistent, ids as properties."""
    import aio_pika

    headers: dict[str, FieldValue] = {
        f"cloudEvents:{attribute}": str(delivery.event[attribute])
        for attribute in HEADER_ATTRIBUTES
        if delivery.event.get(attribute) is not None
    }
    return aio_pika.Message(
        body=delivery.body.encode(),
        content_type=STRUCTURED,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=delivery.id,
        type=str(delivery.event.get("type", "")) or None,
        # When the bridge published it; the change's own time is the event's `time`.
        timestamp=clock.now(),
        app_id="absorb-bridge",
        headers=headers,
    )
