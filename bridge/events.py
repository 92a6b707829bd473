"""CloudEvents from changes: the event format of the contract. Pure functions."""

from __future__ import annotations

import hashlib
from typing import Any

from bridge.absorb.models import Status
from bridge.absorb.timefmt import format_rfc3339
from bridge.diff import Change


def event_type(change: Change) -> str:
    """`absorb.<resource>.<change>`."""
    return f"absorb.{change.kind.name}.{change.change}"


_STATUS_NAMES = {s.value: s.name for s in Status}


def status_name(value: int | None) -> str | None:
    """Absorb's name of a status number (the number itself if Absorb added a new one)."""
    if value is None:
        return None
    return _STATUS_NAMES.get(value) or str(value)


def event_id(source: str, change: Change, *, time: str | None = None) -> str:
    """The same observed change gives the same id, on any replica, retry or restart.

    `time` is `_time(change)` when the caller has it already.
    """
    current = change.current
    previous = change.previous
    parts = [
        source,
        event_type(change),
        change.subject,
        (time if time is not None else _time(change)) or "",
        repr(previous.status if previous else None),
        repr(current.status if current else None),
        repr(_norm(current.progress) if current else None),
        repr(_norm(current.score) if current else None),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def cloud_event(source: str, change: Change) -> dict[str, Any]:
    """The CloudEvents 1.0 structured-mode JSON object for a change."""
    current = change.current
    status = current.status if current else (change.previous.status if change.previous else None)
    time = _time(change)
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id(source, change, time=time or ""),
        "source": source,
        "type": event_type(change),
        "subject": change.subject,
        "time": time,
        "datacontenttype": "application/json",
        "status": status_name(status),
    }
    if change.change != "created" and change.previous is not None:
        event["previousstatus"] = status_name(change.previous.status)
    event["data"] = {
        "current": current.raw if current else None,
        "previous": change.previous.fields() if change.previous else None,
        "changed": list(change.changed),
    }
    return {k: v for k, v in event.items() if v is not None or k == "data"}


def _norm(value: float | None) -> float | None:
    # As snapshots keep them, so an id computed from either side agrees.
    return None if value is None else round(float(value), 4)


def _time(change: Change) -> str | None:
    when = change.current.time if change.current else None
    if when is None and change.previous is not None:
        when = change.previous.date_edited
    return format_rfc3339(when) if when else None
