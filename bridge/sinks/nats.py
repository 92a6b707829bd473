"""The `nats` sink: each event published to NATS JetStream, acknowledged before it counts.

The message is the CloudEvent in structured mode (`Content-Type:
application/cloudevents+json`), on the subject the sink's template gives. Its
`Nats-Msg-Id` header is the event id, so JetStream drops an event sent again
within the stream's duplicate window (a retry after a lost acknowledgement, a
replay after a crash). The `ce-id`, `ce-type`, `ce-source`, `ce-subject` and
`ce-time` headers repeat the event's attributes for consumers that filter on
headers. nats-py reconnects by itself; while it does, sends fail at once and the
delivery worker tries again on the sink's schedule.
"""

from __future__ import annotations

import asyncio
import string
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog

from bridge import clock
from bridge.config import NatsSinkConfig, mask_url
from bridge.redaction import mask
from bridge.sinks.base import Delivery, SinkError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

log = structlog.get_logger(__name__)

STRUCTURED = "application/cloudevents+json"
#: The CloudEvents attributes repeated as `ce-<name>` headers.
HEADER_ATTRIBUTES = ("id", "type", "source", "subject", "time")
INSTALL_HINT = "pip install 'absorb-bridge[nats]'"
#: How long `start` keeps trying to reach a server before it reports the sink down.
CONNECT_TIMEOUT_S = 10.0
#: How long a publish waits for JetStream's acknowledgement.
PUBLISH_TIMEOUT_S = 10.0


class NatsSink:
    """Publishes each event to JetStream and returns once the stream acknowledged it.

    With `config.stream` set, `start` creates that stream (covering the subject
    template) when it does not exist, and every publish must land in it; without
    it, a stream the operator made must already cover the subjects.
    """

    def __init__(
        self, config: NatsSinkConfig, *, connect_timeout_s: float = CONNECT_TIMEOUT_S
    ) -> None:
        self.name = config.name
        self.last_reply = ""
        self.config = config
        self.connect_timeout_s = connect_timeout_s
        self.subjects = stream_subjects(config.subject)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self._failed_at: float | None = None
        self._failure = ""
        token = config.token.get_secret_value() if config.token else None
        self._secrets = [token, *(urlsplit(s).password for s in config.servers)]

    async def start(self) -> None:
        """Connect, and make sure the configured stream exists; SinkError if either fails."""
        if self._js is not None:
            return
        try:
            from nats.aio.client import Client
            from nats.errors import Error as NatsError
        except ImportError:
            raise SinkError(self.name, f"needs nats-py: {INSTALL_HINT}") from None
        nc = Client()
        try:
            # nats-py retries the first connection forever when reconnecting is unlimited.
            await asyncio.wait_for(
                nc.connect(
                    self.config.servers,
                    name=f"absorb-bridge {self.name}",
                    token=self.config.token.get_secret_value() if self.config.token else None,
                    user_credentials=str(self.config.credentials)
                    if self.config.credentials
                    else None,
                    max_reconnect_attempts=-1,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                ),
                self.connect_timeout_s,
            )
        except ImportError:
            # Raised before any connection was made: there is nothing to close.
            raise SinkError(
                self.name,
                "a credentials file needs the nkeys package: pip install 'nats-py[nkeys]'",
            ) from None
        except (TimeoutError, NatsError, OSError) as e:
            last = nc.last_error or e
            await _quietly_close(nc)
            raise SinkError(
                self.name,
                f"cannot connect to {self._where()} within {self.connect_timeout_s:g} s "
                f"({self._text(last)}): check the servers and credentials",
            ) from None
        js = nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
        if self.config.stream:
            try:
                await self._ensure_stream(js, self.config.stream)
            except SinkError:
                await _quietly_close(nc)
                raise
        self._nc, self._js = nc, js

    async def _ensure_stream(self, js: JetStreamContext, stream: str) -> None:
        from nats.errors import Error as NatsError
        from nats.js.errors import NotFoundError

        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            try:
                await js.add_stream(name=stream, subjects=[self.subjects])
            except (TimeoutError, NatsError, OSError) as e:
                try:  # another replica may have created it a moment ago
                    info = await js.stream_info(stream)
                except (TimeoutError, NatsError, OSError):
                    raise SinkError(
                        self.name,
                        f"cannot create JetStream stream {stream!r} for {self.subjects}: "
                        f"{self._text(e)}",
                    ) from None
            else:
                log.info(
                    "nats.stream_created", sink=self.name, stream=stream, subjects=self.subjects
                )
                return
        except (TimeoutError, NatsError, OSError) as e:
            raise SinkError(
                self.name,
                f"cannot look up JetStream stream {stream!r}: {self._text(e)} "
                "(is JetStream enabled on the server?)",
            ) from None
        covered = info.config.subjects or []
        if not any(covers(pattern, self.subjects) for pattern in covered):
            log.warning(
                "nats.stream_does_not_cover_subjects",
                sink=self.name,
                stream=stream,
                stream_subjects=covered,
                subjects=self.subjects,
                hint=f"add {self.subjects} to the stream's subjects",
            )

    async def send(self, delivery: Delivery) -> None:
        """Publish the event and wait for JetStream's acknowledgement; SinkError if none came."""
        nc, js = await self._connected()
        subject = self._subject(delivery)
        if not nc.is_connected:
            raise SinkError(self.name, f"not connected to {self._where()} (reconnecting)")
        from nats.errors import Error as NatsError
        from nats.js.errors import APIError, NoStreamResponseError

        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                ack = await js.publish(
                    subject,
                    delivery.body.encode(),
                    timeout=PUBLISH_TIMEOUT_S,
                    stream=self.config.stream,
                    headers=headers(delivery),
                )
        except NoStreamResponseError:
            raise SinkError(
                self.name,
                f"no JetStream stream takes subject {subject!r}: create one covering "
                f"{self.subjects}, or set the sink's stream to have the bridge create it",
            ) from None
        except APIError as e:
            raise SinkError(self.name, f"JetStream refused {subject!r}: {self._text(e)}") from None
        except TimeoutError:
            raise SinkError(
                self.name,
                f"no acknowledgement for {subject!r} within {PUBLISH_TIMEOUT_S:g} s",
            ) from None
        except (NatsError, OSError) as e:
            raise SinkError(self.name, f"cannot publish {subject!r}: {self._text(e)}") from None
        self.last_reply = f"acknowledged by stream {ack.stream} as sequence {ack.seq}" + (
            " (a duplicate within the stream's window)" if ack.duplicate else ""
        )
        if ack.duplicate:
            log.debug("nats.duplicate", sink=self.name, id=delivery.id, stream=ack.stream)

    async def _connected(self) -> tuple[Client, JetStreamContext]:
        """The client, started on first use; a failed start is not repeated for a while."""
        if self._nc is not None and self._nc.is_closed:
            self._nc = self._js = None  # closed under us (nats-py gave up): connect afresh
        if self._nc is None or self._js is None:
            async with self._lock:
                recent = self._failed_at is not None and (
                    clock.monotonic() - self._failed_at < self.connect_timeout_s
                )
                if self._js is None and recent:
                    raise SinkError(self.name, self._failure)
                try:
                    await self.start()
                except SinkError as e:
                    self._failed_at = clock.monotonic()
                    self._failure = str(e).removeprefix(f"sink {self.name}: ")
                    raise
        assert self._nc is not None
        assert self._js is not None
        return self._nc, self._js

    def _subject(self, delivery: Delivery) -> str:
        try:
            subject = self.config.subject.format(**delivery.template_values())
        except (KeyError, IndexError, ValueError) as e:
            raise SinkError(self.name, f"subject template {self.config.subject!r}: {e}") from None
        if not valid_subject(subject):
            raise SinkError(
                self.name,
                f"subject {subject!r} from template {self.config.subject!r} is not a NATS "
                "subject (empty token, space or wildcard): change the template",
            )
        return subject

    async def close(self) -> None:
        """Drain and close the connection; safe to call twice."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            await _quietly_close(nc, drain=True)

    def _where(self) -> str:
        return ", ".join(mask_url(s) for s in self.config.servers)

    def _text(self, error: BaseException) -> str:
        return mask(str(error) or type(error).__name__, self._secrets)

    async def _on_error(self, error: Exception) -> None:
        log.warning("nats.error", sink=self.name, error=self._text(error))

    async def _on_disconnected(self) -> None:
        log.warning("nats.disconnected", sink=self.name, servers=self._where())

    async def _on_reconnected(self) -> None:
        log.info("nats.reconnected", sink=self.name, servers=self._where())


def headers(delivery: Delivery) -> dict[str, str]:
    """The message headers: content type, the de-duplication id and `ce-` attributes."""
    values = {"Content-Type": STRUCTURED, "Nats-Msg-Id": delivery.id}
    for attribute in HEADER_ATTRIBUTES:
        value = delivery.event.get(attribute)
        if value is not None:
            values[f"ce-{attribute}"] = str(value)
    return values


def stream_subjects(template: str) -> str:
    """The subject filter that covers every subject `template` can give.

    A token with a field becomes `*`; a token with `{type}` (which holds dots)
    becomes `>` and ends the filter. `absorb.{resource}.{change}` -> `absorb.*.*`.
    """
    tokens: list[str] = []
    for token in template.split("."):
        fields = [f for _, f, _, _ in string.Formatter().parse(token) if f is not None]
        if "type" in fields:
            tokens.append(">")
            break
        tokens.append("*" if fields else token.replace("{{", "{").replace("}}", "}"))
    return ".".join(tokens)


def covers(pattern: str, subjects: str) -> bool:
    """Whether the subject filter `pattern` matches every subject `subjects` matches."""
    wanted = subjects.split(".")
    for n, token in enumerate(pattern.split(".")):
        if token == ">":
            return len(wanted) > n
        if n >= len(wanted) or wanted[n] == ">" or token not in ("*", wanted[n]):
            return False
    return len(wanted) == len(pattern.split("."))


def valid_subject(subject: str) -> bool:
    """Whether a subject can be published to: non-empty tokens, no spaces, no wildcards."""
    return all(
        token and not any(c.isspace() or c in "*>" for c in token) for token in subject.split(".")
    )


async def _quietly_close(nc: Client, *, drain: bool = False) -> None:
    """Close a client, whatever state it is in (closing must not fail a shutdown)."""
    from nats.errors import Error as NatsError

    try:
        if drain and nc.is_connected:
            await nc.drain()
        else:
            await nc.close()
    except (TimeoutError, NatsError, OSError):
        log.debug("nats.close_failed")
    if not nc.is_closed:
        try:
            await nc.close()
        except (TimeoutError, NatsError, OSError):
            log.debug("nats.close_failed")
