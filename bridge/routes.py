"""Routes: which events go to which sinks. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Route:
    """Sinks, and the filters an event must pass to reach them (None: no filter)."""

    sinks: tuple[str, ...]
    types: frozenset[str] | None = None
    statuses: frozenset[str] | None = None
    previous_statuses: frozenset[str] | None = None
    course_ids: frozenset[str] | None = None
    feeds: frozenset[str] | None = None

    def matches(self, event: dict[str, Any], *, feed: str, course_id: str) -> bool:
        """Whether an event passes every filter of the route."""
        return (
            _ok(self.types, event.get("type"))
            and _ok(self.statuses, event.get("status"))
            and _ok(self.previous_statuses, event.get("previousstatus"))
            and _ok(self.course_ids, course_id.lower() or None)
            and _ok(self.feeds, feed)
        )


def sinks_for(
    routes: Iterable[Route], event: dict[str, Any], *, feed: str, course_id: str
) -> set[str]:
    """Every sink of every route the event matches."""
    return {
        sink
        for route in routes
        if route.matches(event, feed=feed, course_id=course_id)
        for sink in route.sinks
    }


def _ok(allowed: frozenset[str] | None, value: Any) -> bool:
    return allowed is None or value in allowed
