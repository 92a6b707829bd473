"""The interface every sink implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from bridge.errors import BridgeError
from bridge.redaction import excerpt


@dataclass(frozen=True)
class Delivery:
    """One event on its way to a sink: the CloudEvent, its JSON text, and where it came from."""

    event: dict[str, Any]
    body: str
    feed: str
    course_id: str

    @property
    def id(self) -> str:
        """The event id (consumers de-duplicate on it)."""
        return str(self.event["id"])

    def template_values(self) -> dict[str, str]:
        """What subject, routing-key and similar templates may use."""
        event_type = str(self.event.get("type", ""))
        _, resource, change = [*event_type.split("."), "", "", ""][:3]
        return {
            "type": event_type,
            "resource": resource,
            "change": change,
            "status": str(self.event.get("status") or ""),
            "feed": self.feed,
            "subject": str(self.event.get("subject", "")),
        }


class SinkError(BridgeError):
    """A sink could not take an event.

    `retry_after_s` when the sink said how long to wait; `gone` when it said it
    wants no more events at all (HTTP 410), which disables the sink; `permanent`
    when this event can never be delivered as it is (it cannot be made into what the
    sink takes), so it goes to the dead letters at once instead of being retried.
    """

    def __init__(
        self,
        sink: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        gone: bool = False,
        permanent: bool = False,
    ) -> None:
        super().__init__(f"sink {sink}: {message}")
        self.sink = sink
        self.retry_after_s = retry_after_s
        self.gone = gone
        self.permanent = permanent


def redirected(status: int, location: str | None, secrets: list[str]) -> str:
    """The error of a redirect, which is never followed: where it pointed, secrets masked."""
    where = excerpt(location, secrets) if location else "nowhere (no Location header)"
    return (
        f"the receiver answered HTTP {status} redirecting to {where}; redirects are not "
        "followed, so set the sink's URL to where the receiver wants the events"
    )


def answered(status: int, body: bytes, secrets: list[str]) -> str:
    """A receiver's answer for people: its status and the first line of its body."""
    lines = body.decode("utf-8", "replace").strip().splitlines()
    first = excerpt(lines[0], secrets) if lines else "(empty body)"
    return f"HTTP {status}: {first}"


class Sink(Protocol):
    """Takes events one at a time; `send` returns only once the event is safely delivered.

    A sink may also keep `last_reply`: for people, how it answered the last send (a
    status and body line, a stream id, an acknowledgement); `test-sink` prints it.
    """

    name: str

    async def start(self) -> None:
        """Open connections or files."""
        ...

    async def send(self, delivery: Delivery) -> None:
        """Deliver one event, returning once the sink confirmed it; raise `SinkError` if not."""
        ...

    async def close(self) -> None:
        """Release what `start` opened; safe to call twice."""
        ...


@runtime_checkable
class BatchSink(Sink, Protocol):
    """A sink that can also take many events in one go (one round trip), such as a queue.

    The delivery worker hands it hundreds of events at a time, never two of one
    subject, instead of sending them one by one.
    """

    async def send_many(self, deliveries: Sequence[Delivery]) -> list[SinkError | None]:
        """Deliver several events; one outcome per delivery, in order.

        None where the sink confirmed the event, the `SinkError` where it did not: one
        event failing must not fail the others.
        """
        ...
