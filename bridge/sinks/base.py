"""The interface every sink implements."""

from __future__ import annotations

from typing import Any, Protocol

from bridge.errors import BridgeError


class SinkError(BridgeError):
    """A sink could not take an event.

    `retry_after_s` when the sink said how long to wait; `gone` when it said it
    wants no more events at all (HTTP 410), which disables the sink.
    """

    def __init__(
        self, sink: str, message: str, *, retry_after_s: float | None = None, gone: bool = False
    ) -> None:
        super().__init__(f"sink {sink}: {message}")
        self.sink = sink
        self.retry_after_s = retry_after_s
        self.gone = gone


class Sink(Protocol):
    """Takes events one at a time; `send` returns only once the event is safely delivered."""

    name: str

    async def start(self) -> None:
        """Open connections or files."""
        ...

    async def send(self, event: dict[str, Any], body: str) -> None:
        """Deliver one event (`body` is its CloudEvents JSON); raise `SinkError` if it failed."""
        ...

    async def close(self) -> None:
        """Release what `start` opened; safe to call twice."""
        ...
