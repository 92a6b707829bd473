"""The `stdout` sink: events on standard output, as JSON lines or readable lines."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from bridge.sinks.base import Delivery


class StdoutSink:
    """Prints each event; `pretty` gives one readable line per event."""

    def __init__(self, name: str, *, pretty: bool = False, stream: TextIO | None = None) -> None:
        self.name = name
        self.last_reply = ""
        self.pretty = pretty
        self.stream = stream or sys.stdout

    async def start(self) -> None:
        """Nothing to open."""

    async def send(self, delivery: Delivery) -> None:
        """Print the event and flush."""
        line = describe(delivery.event) if self.pretty else delivery.body
        self.stream.write(line + "\n")
        self.stream.flush()
        self.last_reply = "printed to stdout"

    async def close(self) -> None:
        """Nothing to close."""


def describe(event: dict[str, Any]) -> str:
    """A one-line, human description of an event: time, learner, course, transition, score."""
    data = event.get("data") or {}
    current = data.get("current") or {}
    # An attempt record names no learner; the drill-down put its learner in `data.parent`.
    parent: dict[str, Any] = data.get("parent") or {}
    kind = str(event.get("type", "")).split(".")[1:2] or ["?"]
    change = str(event.get("type", "")).rsplit(".", 1)[-1]
    who = (
        current.get("fullName")
        or parent.get("fullName")
        or ("(attempt)" if kind[0] == "attempt" else event.get("subject"))
    )
    what = current.get("courseName") or current.get("name") or ""
    previous, status = event.get("previousstatus"), event.get("status")
    if change == "status_changed":
        transition = f"{previous} -> {status}"
    else:
        transition = f"{change.replace('_', ' ')}: {status}"
    score = current.get("score")
    tail = f"  score {score:g}" if isinstance(score, int | float) else ""
    when = str(event.get("time", ""))[11:19]
    return f"{when}  {kind[0]:<18} {str(who)[:24]:<24} {str(what)[:30]:<30} {transition}{tail}"
