"""CloudEvents from changes: the event format of the contract. Pure functions."""

from __future__ import annotations

import hashlib
from typing import Any, get_args

from bridge.absorb.models import Status
from bridge.absorb.timefmt import format_rfc3339
from bridge.diff import Change, ChangeKind
from bridge.snapshots import Kind


def event_type(change: Change) -> str:
    """`absorb.<resource>.<change>`."""
    return _TYPES[change.kind, change.change]


_TYPES = {(kind, c): f"absorb.{kind.name}.{c}" for kind in Kind for c in get_args(ChangeKind)}


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
    current, previous = change.current, change.previous
    if time is None:
        time = _time(change) or ""
    before = previous.status if previous else None
    if current is None:
        after = progress = score = None
    else:
        after, progress, score = current.status, _norm(current.progress), _norm(current.score)
    text = (
        f"{source}\n{event_type(change)}\n{change.subject}\n{time}\n"
        f"{before!r}\n{after!r}\n{progress!r}\n{score!r}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cloud_event(source: str, change: Change) -> dict[str, Any]:
    """The CloudEvents 1.0 structured-mode JSON object for a change.

    Attributes without a value are left out (`data` is always there).
    """
    current, previous = change.current, change.previous
    status = current.status if current else (previous.status if previous else None)
    time = _time(change)
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id(source, change, time=time or ""),
        "source": source,
        "type": event_type(change),
        "subject": change.subject,
    }
    if time is not None:
        event["time"] = time
    event["datacontenttype"] = "application/json"
    if status is not None:
        event["status"] = status_name(status)
    if change.change != "created" and previous is not None and previous.status is not None:
        event["previousstatus"] = status_name(previous.status)
    event["data"] = {
        "current": current.raw if current else None,
        "previous": previous.fields() if previous else None,
        "changed": list(change.changed),
    }
    return event


def _norm(value: float | None) -> float | None:
    # As snapshots keep them, so an id computed from either side agrees.
    return None if value is None else round(float(value), 4)


def _time(change: Change) -> str | None:
    when = change.current.time if change.current else None
    if when is None and change.previous is not None:
        when = change.previous.date_edited
    return format_rfc3339(when) if when else None
