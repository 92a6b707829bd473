"""The `stdout` sink: events on standard output, as JSON lines or readable lines."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from bridge.sinks.base import Delivery


class StdoutSink:
    """Prints each event; `pretty` gives one readable line per event."""

    def __init__(self, name: str, *, pretty: bool = False, stream: TextIO | None = None) -> None:
        self.name = name
        self.pretty = pretty
        self.stream = stream or sys.stdout

    async def start(self) -> None:
        """Nothing to open."""

    async def send(self, delivery: Delivery) -> None:
        """Print the event and flush."""
        line = describe(delivery.event) if self.pretty else delivery.body
        self.stream.write(line + "\n")
        self.stream.flush()

    async def close(self) -> None:
        """Nothing to close."""


def describe(event: dict[str, Any]) -> str:
    """A one-line, human description of an event."""
    current = (event.get("data") or {}).get("current") or {}
    who = current.get("fullName") or event.get("subject")
    what = current.get("courseName") or current.get("name") or ""
    change = event["type"].rsplit(".", 1)[-1]
    previous = event.get("previousstatus")
    status = event.get("status")
    transition = f"{previous} -> {status}" if previous else f"{change}: {status}"
    score = current.get("score")
    tail = f"  score {score:g}" if isinstance(score, int | float) else ""
    kind = event["type"].split(".")[1]
    return f"{event.get('time', '')}  {kind:<18} {who:<24} {what:<30} {transition}{tail}"
