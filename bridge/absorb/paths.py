"""Where each Absorb operation lives: the one table to edit if Absorb's paths differ.

Absorb's reference page names the operations but not their paths; these come
from FACTS.md, with its confidence noted for the ones the public record is thin on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from urllib.parse import quote


@dataclass(frozen=True)
class Route:
    """An operation's method and path template.

    `idempotent` says whether the call may be repeated after any failure; a write
    is repeated only when Absorb certainly did not act on it.
    """

    method: str
    template: str
    idempotent: bool

    def path(self, **ids: str) -> str:
        """The template with each `{name}` replaced by its URL-quoted value."""
        return self.template.format(**{k: quote(str(v), safe="") for k, v in ids.items()})

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def _get(template: str) -> Route:
    return Route("GET", template, idempotent=True)


def _post(template: str) -> Route:
    return Route("POST", template, idempotent=False)


_USER_COURSE = "/users/{user_id}/enrollments/{course_id}"


class Op(Enum):
    """Every operation of the enrollments reference page, plus authentication and courses."""

    AUTHENTICATE = _post("/authenticate")
    LIST_COURSES = _get("/courses")
    # Session enrollments
    LIST_USER_SESSION_ENROLLMENTS = _get(_USER_COURSE + "/sessions")
    GET_USER_SESSION_ENROLLMENT = _get(_USER_COURSE + "/sessions/{session_id}")
    CREATE_ILC_ENROLLMENT = _post(_USER_COURSE + "/session/{session_id}")  # medium
    LIST_SESSION_ENROLLMENTS = _get("/courses/{course_id}/sessions/{session_id}/enrollments")
    # Chapter enrollments
    LIST_CHAPTER_ENROLLMENTS = _get(_USER_COURSE + "/chapters")
    GET_CHAPTER_ENROLLMENT = _get(_USER_COURSE + "/chapters/{chapter_id}")
    # Course enrollments
    CREATE_ENROLLMENT = _post(_USER_COURSE)
    GET_USER_COURSE_ENROLLMENT = _get(_USER_COURSE)
    CREATE_OR_UPDATE_COURSE_ENROLLMENT = _post("/users/{user_id}/enrollments")
    LIST_USER_COURSE_ENROLLMENTS = _get("/users/{user_id}/enrollments")
    UNENROLL = _post("/enrollments/unenroll")
    GET_COURSE_ENROLLMENT = _get("/enrollments/{enrollment_id}")
    LIST_COURSE_ENROLLMENTS = _get("/courses/{course_id}/enrollments")
    LIST_BULK_COURSE_ENROLLMENTS = _get("/bulk/studentcourses")  # medium
    # Lesson enrollments
    LIST_LESSON_ENROLLMENTS = _get("/courses/{course_id}/lessons/{lesson_id}/enrollments")
    GET_LESSON_ENROLLMENT_IN_CHAPTER = _get(  # medium
        _USER_COURSE + "/chapters/{chapter_id}/lessons/{lesson_id}"
    )
    LIST_USER_LESSON_ENROLLMENTS = _get(_USER_COURSE + "/lessons")
    GET_USER_LESSON_ENROLLMENT = _get(_USER_COURSE + "/lessons/{lesson_id}")
    LIST_USER_CHAPTER_LESSON_ENROLLMENTS = _get(
        _USER_COURSE + "/chapters/{chapter_id}/lessons"
    )  # low
    # Attempts
    LIST_LESSON_ATTEMPTS = _get(_USER_COURSE + "/lessons/{lesson_id}/attempts")
    START_ATTEMPT = _post(_USER_COURSE + "/lessons/{lesson_id}/startattempt")  # medium
    FINISH_ATTEMPT = _post("/attempts/{attempt_id}/finish")
    FINISH_USER_LESSON_ATTEMPT = _post(
        _USER_COURSE + "/lessons/{lesson_id}/attempts/{attempt_id}/finish"
    )
    # My enrollments (the authenticated user's own)
    GET_MY_COURSE_ENROLLMENT = _get("/my-enrollments/{course_id}")  # low
    CREATE_MY_COURSE_ENROLLMENT = _post("/my-enrollments/{course_id}")  # low
    LIST_MY_COURSE_ENROLLMENTS = _get("/my-enrollments")  # low

    @property
    def route(self) -> Route:
        """The operation's method and path template."""
        route: Route = self.value
        return route


REGIONS: dict[str, str] = {
    "us": "https://rest.myabsorb.com",
    "ca": "https://rest.myabsorb.ca",
    "eu": "https://rest.myabsorb.eu",
    "au": "https://rest.myabsorb.com.au",
    "sandbox-us": "https://rest.sandbox.myabsorb.com",
    "sandbox-ca": "https://rest.sandbox.myabsorb.ca",
    "sandbox-eu": "https://rest.sandbox.myabsorb.eu",
    "sandbox-au": "https://rest.sandbox.myabsorb.com.au",
}


def resolve_base_url(value: str) -> str:
    """A base URL from a region short name (`us`, `eu`, `sandbox-ca`, …) or a URL as given."""
    key = value.strip().lower()
    if key in REGIONS:
        return REGIONS[key]
    if key == "sandbox":
        return REGIONS["sandbox-us"]
    if not key.startswith(("http://", "https://")):
        names = ", ".join(REGIONS)
        raise ValueError(f"base_url {value!r} is neither a URL nor a region ({names})")
    return value.strip().rstrip("/")
