"""The feeds: which resource each sweeps, over what scope, how often, and what it emits."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from bridge.config.base import _Model
from bridge.config.values import AnyDuration, Guid, PositiveDuration, Slug, format_duration

RESOURCES = ("course_enrollments", "lesson_enrollments", "session_enrollments", "user_enrollments")


class LessonScope(_Model):
    """One lesson of one course whose enrollments a lesson_enrollments feed sweeps."""

    course_id: Guid
    lesson_id: Guid


class SessionScope(_Model):
    """One session of one course whose enrollments a session_enrollments feed sweeps."""

    course_id: Guid
    session_id: Guid


Resource = Literal[
    "course_enrollments", "lesson_enrollments", "session_enrollments", "user_enrollments"
]
# Which resource each scope key belongs to; the first three are required for theirs.
_SCOPE_OF = {
    "lessons": "lesson_enrollments",
    "sessions": "session_enrollments",
    "user_ids": "user_enrollments",
    "course_ids": "course_enrollments",
    "details": "course_enrollments",
}
_SCOPE_HINT = {
    "lessons": "a list of {course_id, lesson_id}",
    "sessions": "a list of {course_id, session_id}",
    "user_ids": "a list of user GUIDs",
}


class FeedConfig(_Model):
    """One resource swept on a schedule: what to sweep, how often, what to emit."""

    name: Slug
    resource: Resource
    course_ids: list[Guid] | None = Field(None, min_length=1, validate_default=True)
    lessons: list[LessonScope] | None = Field(None, min_length=1, validate_default=True)
    sessions: list[SessionScope] | None = Field(None, min_length=1, validate_default=True)
    user_ids: list[Guid] | None = Field(None, min_length=1, validate_default=True)
    interval_s: PositiveDuration = Field(30.0, alias="interval")
    lookback_s: AnyDuration = Field(600.0, alias="lookback")
    first_sync: Literal["baseline", "emit"] = "baseline"
    details: list[Literal["lessons", "chapters", "attempts"]] = Field([], validate_default=True)
    progress_events: bool = False
    reconcile_every_s: PositiveDuration = Field(86400.0, alias="reconcile_every")
    # Opt-in: how far a quiet scope's interval may back off to save requests (at least
    # `interval`); unset, every scope is swept every `interval`, as promised.
    max_interval_s: PositiveDuration | None = Field(None, alias="max_interval")

    @field_validator("lessons", "sessions", "user_ids", "course_ids", "details")
    @classmethod
    def _fits_resource(cls, value: Any, info: ValidationInfo) -> Any:
        resource = info.data.get("resource")
        key = info.field_name or ""
        wanted = _SCOPE_OF[key]
        if resource is None:
            return value
        if not value:
            if resource == wanted and key in _SCOPE_HINT:
                raise ValueError(f"required for resource {wanted}: {_SCOPE_HINT[key]}")
            return value
        if resource != wanted:
            raise ValueError(f"only for resource {wanted}, not {resource}")
        return list(dict.fromkeys(value)) if key == "details" else value

    @field_validator("max_interval_s")
    @classmethod
    def _not_below_interval(cls, value: float | None, info: ValidationInfo) -> float | None:
        interval = info.data.get("interval_s")
        if value is not None and interval is not None and value < interval:
            raise ValueError(f"must be at least interval ({format_duration(interval)})")
        return value
