"""What a notice names: the GUIDs under keys that name a course, a user or an enrollment.

Absorb documents no body shape, so the search is loose about the key and strict
about the value. A key counts in any case and style (`courseId`, `CourseId`,
`course_id`, `Course.Id`), and so does an `id` inside an object under `course`,
`user` or `enrollment` (`{"Course": {"Id": …}}`), at any depth and inside arrays
(`courseIds: […]`, `items: [{…}]`). Only a value that is a GUID counts; anything
else under such a key is ignored, never an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["course", "user", "enrollment"]

_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
#: Nested this deep, a body is not a notice: the rest of it is not searched.
MAX_DEPTH = 12

#: Keys (lower case, letters and digits only) holding ids of each kind.
_ID_KEYS: dict[str, Kind] = {
    "courseid": "course",
    "courseids": "course",
    "userid": "user",
    "userids": "user",
    "learnerid": "user",
    "enrollmentid": "enrollment",
    "enrollmentids": "enrollment",
    "courseenrollmentid": "enrollment",
}
#: Keys whose object (or objects) name a thing of that kind by their `id`.
_OBJECT_KEYS: dict[str, Kind] = {
    "course": "course",
    "courses": "course",
    "user": "user",
    "users": "user",
    "learner": "user",
    "enrollment": "enrollment",
    "enrollments": "enrollment",
    "courseenrollment": "enrollment",
}


@dataclass
class Named:
    """The ids a notice names, lower case, in the order found, without repeats."""

    courses: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    enrollments: list[str] = field(default_factory=list)

    def add(self, kind: Kind, value: str) -> None:
        """Note an id of a kind once."""
        ids = {"course": self.courses, "user": self.users, "enrollment": self.enrollments}[kind]
        if value.lower() not in ids:
            ids.append(value.lower())

    def __bool__(self) -> bool:
        return bool(self.courses or self.users or self.enrollments)


def find_named(body: Any) -> Named:
    """Every course, user and enrollment id in a notice's JSON body."""
    named = Named()
    _walk(body, None, named, 0)
    return named


def _normal(key: str) -> str:
    return "".join(c for c in key.lower() if c.isalnum())


def _walk(value: Any, kind: Kind | None, named: Named, depth: int) -> None:
    """Search `value`; `kind` is what an id found right here would name."""
    if depth > MAX_DEPTH:
        return
    if isinstance(value, str):
        if kind is not None and _GUID.fullmatch(value.strip()):
            named.add(kind, value.strip())
        return
    if isinstance(value, list):
        for item in value:
            _walk(item, kind, named, depth + 1)
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if not isinstance(key, str):
            continue
        name = _normal(key)
        if name in _ID_KEYS:
            _walk(item, _ID_KEYS[name], named, depth + 1)
        elif name == "id" and kind is not None:
            _walk(item, kind, named, depth + 1)
        elif name in _OBJECT_KEYS and isinstance(item, dict | list):
            _walk(item, _OBJECT_KEYS[name], named, depth + 1)
        elif isinstance(item, dict | list):
            _walk(item, None, named, depth + 1)
