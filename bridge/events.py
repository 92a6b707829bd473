"""CloudEvents from changes: the event format of the contract. Pure functions.

An event is always valid UTF-8 JSON, whatever the record held: `data.current` is
the record as Absorb sent it, except that a lone UTF-16 surrogate (a string a .NET
serializer cut inside an emoji) becomes U+FFFD and a number JSON cannot carry
(NaN, infinity) becomes null.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, get_args

import orjson

from bridge.absorb import models
from bridge.absorb.timefmt import format_rfc3339
from bridge.diff import Change, ChangeKind
from bridge.snapshots import STATUS_OUT_OF_RANGE, Kind, kept_number


def event_type(change: Change) -> str:
    """`absorb.<resource>.<change>`."""
    return _TYPES[change.kind, change.change]


_TYPES = {(kind, c): f"absorb.{kind.name}.{c}" for kind in Kind for c in get_args(ChangeKind)}


def status_name(value: int | None) -> str | None:
    """Absorb's name of a status number; `Unknown(N)` for a number outside its enum."""
    if value is None:
        return None
    return models.status_name(value)


def _kept_status_name(value: int) -> str:
    # A snapshot keeps every status beyond 253 as one value, so the number is lost.
    if value == STATUS_OUT_OF_RANGE:
        return models.OUT_OF_RANGE_STATUS
    return models.status_name(value)


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
    return hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()[:32]


def cloud_event(source: str, change: Change) -> dict[str, Any]:
    """The CloudEvents 1.0 structured-mode JSON object for a change.

    Attributes without a value are left out (`data` is always there). `data.parent`
    is there when the record was found by a drill-down: what it belongs to.
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
    if current is not None and current.status is not None:
        event["status"] = models.status_name(current.status)
    elif status is not None:
        event["status"] = _kept_status_name(status)
    if change.change != "created" and previous is not None and previous.status is not None:
        event["previousstatus"] = _kept_status_name(previous.status)
    event["data"] = {
        "current": current.raw if current else None,
        "previous": previous.fields() if previous else None,
        "changed": list(change.changed),
    }
    if current is not None and current.parent is not None:
        # Beside the record, never in it: `current` stays as Absorb returned it.
        event["data"]["parent"] = current.parent
    return event


def encode(event: dict[str, Any]) -> bytes:
    """An event as compact UTF-8 JSON; never raises for what a record may hold."""
    try:
        return orjson.dumps(event)
    except orjson.JSONEncodeError:  # a lone surrogate, or an integer beyond 64 bits
        return json.dumps(
            _repaired(event), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode()


_SURROGATE = re.compile("[\ud800-\udfff]")


def _repaired(value: Any) -> Any:
    """`value` with lone surrogates as U+FFFD and non-finite numbers as None (orjson's rule)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_repaired(k): _repaired(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_repaired(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _norm(value: float | None) -> float | None:
    # As snapshots keep them, so an id computed from either side agrees.
    return kept_number(value)


def _time(change: Change) -> str | None:
    when = change.current.time if change.current else None
    if when is None and change.previous is not None:
        when = change.previous.date_edited
    return format_rfc3339(when) if when else None
