"""Plain value types: durations, names, GUIDs, event types, statuses, templates, files."""

from __future__ import annotations

import difflib
import re
import string
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, WithJsonSchema

from bridge.absorb.models import Status, is_status_name
from bridge.durations import parse_duration

EVENT_RESOURCES = (
    "course_enrollment",
    "lesson_enrollment",
    "session_enrollment",
    "chapter_enrollment",
    "attempt",
)
EVENT_CHANGES = ("created", "status_changed", "progress_changed", "removed")
# The fields a subject or routing-key template may use: `type` is the whole event
# type, `resource` and `change` its parts, `subject` the enrollment (or attempt) id.
TEMPLATE_FIELDS = ("type", "resource", "change", "status", "feed", "subject")


def format_duration(seconds: float) -> str:
    """A duration as a person writes it (`30s`, `10m`, `1d`, `500ms`); parse_duration reads it."""
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001)):
        count = seconds / size
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"


def _duration(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a duration like 30s, not true or false")
    if isinstance(value, str | int | float):
        return parse_duration(value)
    return value


_render_duration = PlainSerializer(format_duration, return_type=str, when_used="json")
# Marked for `config-schema`, which lets the file say `30s` where the model holds seconds.
Duration = Annotated[
    float,
    BeforeValidator(_duration),
    Field(ge=0, allow_inf_nan=False),
    WithJsonSchema({"type": "number", "minimum": 0, "format": "duration"}),
]
PositiveDuration = Annotated[Duration, Field(gt=0), _render_duration]
AnyDuration = Annotated[Duration, _render_duration]


def _guid(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", value):
        raise ValueError(f"{value!r} is not a GUID (like 3fa85f64-5717-4562-b3fc-2c963f66afa6)")
    return value.lower()


def _slug(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", value):
        raise ValueError(
            f"{value!r} is not a valid name: use lowercase letters, digits, - and _,"
            " starting with a letter or digit"
        )
    return value


def _event_type(value: str) -> str:
    parts = value.split(".")
    if len(parts) != 3 or parts[0] != "absorb":
        raise ValueError(f"{value!r} is not an event type: use absorb.<resource>.<change>")
    if parts[1] not in EVENT_RESOURCES:
        raise ValueError(f"{value!r}: unknown resource {parts[1]!r} ({', '.join(EVENT_RESOURCES)})")
    if parts[2] not in EVENT_CHANGES:
        raise ValueError(f"{value!r}: unknown change {parts[2]!r} ({', '.join(EVENT_CHANGES)})")
    return value


def _status_name(value: str) -> str:
    # `Unknown(N)` is how events name a status Absorb added to its enum.
    if not is_status_name(value):
        close = difflib.get_close_matches(value, Status.__members__, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"unknown status {value!r} ({hint}statuses: {', '.join(Status.__members__)})"
        )
    return value


def _template(value: str) -> str:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as e:
        raise ValueError(f"is not a valid template: {e}") from None
    for name in names:
        if name not in TEMPLATE_FIELDS:
            raise ValueError(f"unknown field {{{name}}} (fields: {', '.join(TEMPLATE_FIELDS)})")
    return value


def _existing_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError(f"no such file: {value}")
    return value


def _listen(value: str) -> str:
    host, colon, port = value.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not a listen address: use HOST:PORT, like 127.0.0.1:9464")
    return value


Text = Annotated[str, Field(min_length=1)]
Slug = Annotated[str, AfterValidator(_slug)]
Guid = Annotated[str, AfterValidator(_guid)]
EventType = Annotated[str, AfterValidator(_event_type)]
StatusName = Annotated[str, AfterValidator(_status_name)]
Template = Annotated[str, AfterValidator(_template)]
ExistingFile = Annotated[Path, AfterValidator(_existing_file)]
