"""A JSON Schema (2020-12) for every event type, generated from the models of what events hold.

`data.current` is described by the Absorb model of the record's resource (fields
Absorb may add are allowed), `data.previous` by `PreviousFields`, which mirrors
`Snapshot.fields()`, and `data.parent` (drill-down records only) by `ParentFields`.
`python -m bridge.event_schemas docs` writes `docs/events.md`, the catalogue with an
example of every type, and `docs/schemas/<type>.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field

from bridge.absorb import models
from bridge.diff import ChangeKind
from bridge.snapshots import Kind

#: The Absorb model of each resource's records.
RECORD_MODELS: dict[Kind, type[models.AbsorbModel]] = {
    Kind.course_enrollment: models.CourseEnrollment,
    Kind.lesson_enrollment: models.LessonEnrollment,
    Kind.chapter_enrollment: models.ChapterEnrollment,
    Kind.session_enrollment: models.SessionEnrollment,
    Kind.attempt: models.Attempt,
}


class PreviousFields(BaseModel):
    """The stored snapshot of the record before the change, in Absorb's field names."""

    model_config = ConfigDict(extra="forbid")

    status: int | None
    progress: float | None
    score: float | None
    isActive: bool | None
    dateEdited: str | None
    dateCompleted: str | None


class ParentFields(BaseModel):
    """`data.parent` of a record found by drilling into a course enrollment: what it belongs to.

    Lesson and chapter enrollment records name no course, attempt records nothing at
    all; the drill-down knows. Not in `removed` events, whose snapshot keeps none of it.
    """

    model_config = ConfigDict(extra="forbid")

    userId: str = Field(description="the learner")
    courseId: str = Field(description="the course")
    courseEnrollmentId: str = Field(description="the learner's enrollment in the course")


class AttemptParentFields(ParentFields):
    """`data.parent` of an attempt: also its lesson, and the learner's name."""

    lessonId: str = Field(description="the lesson attempted")
    lessonEnrollmentId: str = Field(description="the learner's enrollment in the lesson")
    fullName: str | None = Field(
        default=None,
        description="the learner's name, from the lesson enrollment (left out when it has none)",
    )


#: The model of `data.parent`, for the resources found by drilling down.
PARENT_MODELS: dict[Kind, type[ParentFields]] = {
    Kind.lesson_enrollment: ParentFields,
    Kind.chapter_enrollment: ParentFields,
    Kind.attempt: AttemptParentFields,
}


def event_types() -> list[str]:
    """Every event type, `absorb.<resource>.<change>`."""
    return [f"absorb.{kind.name}.{change}" for kind in Kind for change in get_args(ChangeKind)]


def event_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema of one event type."""
    _, resource, change = event_type.split(".")
    record = _plain(RECORD_MODELS[Kind[resource]].model_json_schema(by_alias=True))
    previous = _plain(PreviousFields.model_json_schema())
    null = {"type": "null"}
    properties: dict[str, Any] = {
        "current": null if change == "removed" else record,
        "previous": null if change == "created" else previous,
        "changed": {
            "type": "array",
            "items": {"enum": list(PreviousFields.model_fields)},
            "description": "the tracked fields that differ from the snapshot",
        },
    }
    parent = PARENT_MODELS.get(Kind[resource])
    if parent is not None and change != "removed":
        properties["parent"] = _plain(parent.model_json_schema())
    data = {
        "type": "object",
        "additionalProperties": False,
        "required": ["current", "previous", "changed"],
        "properties": properties,
    }
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": event_type,
        "type": "object",
        "additionalProperties": False,
        "required": ["specversion", "id", "source", "type", "subject", "datacontenttype", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "source": {"type": "string", "minLength": 1, "description": "the tenant's base URL"},
            "type": {"const": event_type},
            "subject": {"type": "string", "minLength": 1, "description": "the record's id"},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "status": {"type": "string", "minLength": 1, "description": "the new status's name"},
            "previousstatus": {"type": "string", "minLength": 1},
            "data": data,
        },
    }
    if change == "created":
        schema["not"] = {"required": ["previousstatus"]}
    return schema


def _plain(schema: Any) -> Any:
    """A model's schema as events carry it: Absorb's times as sent, without pydantic titles."""
    if isinstance(schema, dict):
        return {
            k: _plain(v)
            for k, v in schema.items()
            # Absorb's times often have no zone or seven fractional digits: not RFC 3339.
            if k != "title" and not (k == "format" and v == "date-time")
        }
    if isinstance(schema, list):
        return [_plain(v) for v in schema]
    return schema


def catalogue() -> str:
    """`docs/events.md`: every event type with an example made by the real event code."""
    from bridge import samples

    examples = samples.examples()
    lines = [
        "# Events",
        "",
        "<!-- Written by `python -m bridge.event_schemas docs`; tests check it is current. -->",
        "",
        "Every event is a CloudEvents 1.0 event in JSON (structured mode), as",
        "`../shared/CONTRACT.md` describes. Each type has a JSON Schema (2020-12) in",
        "[`schemas/`](schemas/), generated from the models of the records the events carry:",
        "`data.current` is the record as Absorb returned it (fields Absorb adds are allowed),",
        "`data.previous` the stored snapshot, `data.changed` the tracked fields that differ.",
        "Lesson and chapter enrollments and attempts found by drilling into a course",
        "enrollment also carry `data.parent`, what the record belongs to, which Absorb's",
        "records do not say: `userId`, `courseId`, `courseEnrollmentId`, and for an attempt",
        "`lessonId`, `lessonEnrollmentId` and the learner's `fullName` (when the lesson",
        "enrollment has one). A sink's `personal_data` option may drop or hash fields of",
        "`data.current`, `data.previous` and `data.parent` (see the README). The examples",
        "below were made by the bridge's own diff and event code from sample records.",
        "",
        "| type | when |",
        "|---|---|",
    ]
    for event_type in event_types():
        change = event_type.rsplit(".", 1)[1]
        lines.append(f"| [`{event_type}`](#{event_type.replace('.', '')}) | {_WHEN[change]} |")
    for event_type in event_types():
        lines += [
            "",
            f"## {event_type}",
            "",
            f"{_WHEN[event_type.rsplit('.', 1)[1]].capitalize()}. Schema:"
            f" [`schemas/{event_type}.json`](schemas/{event_type}.json).",
            "",
            "```json",
            json.dumps(examples[event_type], indent=2),
            "```",
        ]
    return "\n".join(lines) + "\n"


_WHEN = {
    "created": "first seen after the baseline (or on an `emit` first sync)",
    "status_changed": "the status differs from the stored snapshot",
    "progress_changed": "progress or score changed with the same status (`progress_events: true`)",
    "removed": "gone from Absorb, found by a reconciliation sweep",
}


def write_docs(folder: Path) -> None:
    """Write `events.md` and `schemas/<type>.json` into `folder`."""
    schemas = folder / "schemas"
    schemas.mkdir(parents=True, exist_ok=True)
    for event_type in event_types():
        text = json.dumps(event_schema(event_type), indent=2) + "\n"
        (schemas / f"{event_type}.json").write_text(text, encoding="utf-8")
    (folder / "events.md").write_text(catalogue(), encoding="utf-8")


if __name__ == "__main__":
    write_docs(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
