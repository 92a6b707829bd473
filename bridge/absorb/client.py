"""The Absorb client: one method per enrollment operation, typed replies, paging."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, overload

import structlog
from pydantic import BaseModel, ValidationError

from bridge.absorb import timefmt
from bridge.absorb.models import (
    ApiResult,
    Attempt,
    AttemptFinished,
    AttemptStarted,
    ChapterEnrollment,
    Course,
    CourseEnrollment,
    CourseEnrollmentUpdate,
    EnrollmentCreated,
    FinishAttempt,
    IlcEnrollmentCreated,
    LessonEnrollment,
    SessionEnrollment,
    Status,
)
from bridge.absorb.paths import Op
from bridge.absorb.transport import AbsorbTransport, Params
from bridge.errors import AbsorbPagingError, AbsorbResponseError
from bridge.redaction import excerpt

M = TypeVar("M", bound=BaseModel)
log = structlog.get_logger(__name__)

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1000
#: `_offset` is a page index and Absorb accepts it up to this value.
MAX_PAGE_INDEX = 65535


@dataclass(frozen=True)
class RawPage:
    """One page of a wrapped collection, its records still as Absorb sent them."""

    total_items: int
    returned_items: int
    limit: int
    offset: int
    items: list[Any]


def parse_model(model: type[M], data: Any, endpoint: str, secrets: Sequence[str] = ()) -> M:
    """Validate `data` as `model`, or raise an error naming the endpoint and the bad fields."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise AbsorbResponseError(endpoint, describe_invalid(e, data, secrets)) from None


def describe_invalid(error: ValidationError, data: Any, secrets: Sequence[str] = ()) -> str:
    """A short account of why a body failed validation, with an excerpt of the body."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
        for err in error.errors()[:3]
    )
    more = f" (+{error.error_count() - 3} more)" if error.error_count() > 3 else ""
    return f"unexpected reply ({problems}{more}): {excerpt(repr(data), secrets)}"


def _filters(
    modified_since: datetime | None, status: Status | int | None
) -> dict[str, str | int | None]:
    return {
        "modifiedSince": timefmt.format_datetime(modified_since) if modified_since else None,
        "status": int(status) if status is not None else None,
    }


def _collection(
    filter: str | None, sort: str | None, modified_since: datetime | None, status: Status | None
) -> dict[str, str | int | None]:
    return {"_filter": filter, "_sort": sort, **_filters(modified_since, status)}


class AbsorbClient:
    """Absorb's enrollment operations, each named after the operation on Absorb's page.

    Lists that Absorb wraps in pages are async iterators that page with `_limit`
    and `_offset` (a page index); lists that Absorb returns as plain arrays are
    lists. Build it with an `AbsorbTransport`, or use `AbsorbClient.connect(...)`.
    """

    def __init__(self, transport: AbsorbTransport, *, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {page_size}")
        self.transport = transport
        self.page_size = page_size

    async def close(self) -> None:
        """Close the underlying transport."""
        await self.transport.close()

    async def __aenter__(self) -> AbsorbClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing ---------------------------------------------------------------------

    async def _one(
        self,
        op: Op,
        model: type[M],
        ids: Mapping[str, str] | None = None,
        params: Params | None = None,
        body: Any = None,
    ) -> M:
        data = await self.transport.request(op, ids=ids, params=params, body=body)
        return parse_model(model, data, _endpoint(op, ids), self.transport.secrets())

    async def _array(
        self, op: Op, model: type[M], ids: Mapping[str, str], params: Params | None = None
    ) -> list[M]:
        data = await self.transport.request(op, ids=ids, params=params)
        endpoint = _endpoint(op, ids)
        secrets = self.transport.secrets()
        if not isinstance(data, list):
            raise AbsorbResponseError(
                endpoint, f"expected a JSON array: {excerpt(repr(data), secrets)}"
            )
        return [
            parse_model(model, item, f"{endpoint} [item {i}]", secrets)
            for i, item in enumerate(data)
        ]

    async def pages(
        self,
        op: Op,
        items_key: str,
        ids: Mapping[str, str] | None = None,
        params: Params | None = None,
        *,
        page_size: int | None = None,
        first_page: int = 0,
    ) -> AsyncGenerator[RawPage, None]:
        """Every page of a wrapped collection, from `first_page` to the last one.

        Stops when a page comes back short or the pages seen cover `totalItems`.
        Raises `AbsorbPagingError` rather than ask past page index 65535.
        """
        limit = page_size or self.page_size
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {limit}")
        endpoint = _endpoint(op, ids)
        offset = first_page
        while True:
            if offset > MAX_PAGE_INDEX:
                raise AbsorbPagingError(
                    endpoint,
                    f"the collection has more than {MAX_PAGE_INDEX + 1} pages of {limit}; "
                    "use a larger page size or a narrower _filter",
                )
            data = await self.transport.request(
                op, ids=ids, params={**(params or {}), "_limit": limit, "_offset": offset}
            )
            page = _raw_page(
                data, items_key, endpoint, self.transport.secrets(), limit=limit, offset=offset
            )
            yield page
            seen = offset * limit + len(page.items)
            if len(page.items) < limit or seen >= page.total_items:
                return
            offset += 1

    async def _items(
        self,
        op: Op,
        items_key: str,
        model: type[M],
        ids: Mapping[str, str] | None,
        params: Params,
    ) -> AsyncIterator[M]:
        endpoint = _endpoint(op, ids)
        secrets = self.transport.secrets()
        async for page in self.pages(op, items_key, ids, params):
            for i, item in enumerate(page.items):
                where = f"{endpoint} [page {page.offset}, item {i}]"
                yield parse_model(model, item, where, secrets)

    # -- courses ------------------------------------------------------------------------

    async def list_courses(
        self,
        *,
        filter: str | None = None,
        sort: str | None = None,
        on_invalid: Callable[[str], None] | None = None,
    ) -> AsyncIterator[Course]:
        """Every course the admin may see (`GET /courses`).

        A course that does not fit the model is skipped, never the list: it is passed
        to `on_invalid` (with where it was and why), or logged when none is given.
        """
        op, params = Op.LIST_COURSES, {"_filter": filter, "_sort": sort}
        endpoint = _endpoint(op, None)
        secrets = self.transport.secrets()
        async for page in self.pages(op, "courses", None, params):
            for i, item in enumerate(page.items):
                where = f"{endpoint} [page {page.offset}, item {i}]"
                try:
                    yield parse_model(Course, item, where, secrets)
                except AbsorbResponseError as e:
                    if on_invalid is None:
                        log.warning("absorb.course_skipped", error=str(e))
                    else:
                        on_invalid(str(e))

    # -- session enrollments ------------------------------------------------------------

    async def list_user_session_enrollments(
        self,
        user_id: str,
        course_id: str,
        *,
        status: Status | None = None,
        modified_since: datetime | None = None,
    ) -> list[SessionEnrollment]:
        """List user's session enrollments for specific course."""
        ids = {"user_id": user_id, "course_id": course_id}
        params = _filters(modified_since, status)
        return await self._array(Op.LIST_USER_SESSION_ENROLLMENTS, SessionEnrollment, ids, params)

    async def get_user_session_enrollment(
        self,
        user_id: str,
        course_id: str,
        session_id: str,
        *,
        status: Status | None = None,
        modified_since: datetime | None = None,
    ) -> SessionEnrollment:
        """Get user's session enrollment for specific course."""
        ids = {"user_id": user_id, "course_id": course_id, "session_id": session_id}
        params = _filters(modified_since, status)
        return await self._one(Op.GET_USER_SESSION_ENROLLMENT, SessionEnrollment, ids, params)

    async def create_ilc_enrollment(
        self,
        user_id: str,
        course_id: str,
        session_id: str,
        *,
        re_enroll: bool | None = None,
        cancel_session: bool | None = None,
    ) -> IlcEnrollmentCreated:
        """Create ILC enrollment for user (also re-enrolls, or cancels the session enrollment)."""
        ids = {"user_id": user_id, "course_id": course_id, "session_id": session_id}
        params = {"reEnroll": re_enroll, "cancelSession": cancel_session}
        return await self._one(Op.CREATE_ILC_ENROLLMENT, IlcEnrollmentCreated, ids, params)

    def list_session_enrollments(
        self,
        course_id: str,
        session_id: str,
        *,
        filter: str | None = None,
        sort: str | None = None,
        modified_since: datetime | None = None,
        status: Status | None = None,
    ) -> AsyncIterator[SessionEnrollment]:
        """List an ILC's session enrollments (every page)."""
        ids = {"course_id": course_id, "session_id": session_id}
        params = _collection(filter, sort, modified_since, status)
        return self._items(
            Op.LIST_SESSION_ENROLLMENTS, "enrollments", SessionEnrollment, ids, params
        )

    # -- chapter enrollments ------------------------------------------------------------

    async def list_chapter_enrollments(
        self,
        user_id: str,
        course_id: str,
        *,
        status: Status | None = None,
        modified_since: datetime | None = None,
    ) -> list[ChapterEnrollment]:
        """List chapter enrollments for a specified course."""
        ids = {"user_id": user_id, "course_id": course_id}
        params = _filters(modified_since, status)
        return await self._array(Op.LIST_CHAPTER_ENROLLMENTS, ChapterEnrollment, ids, params)

    async def get_chapter_enrollment(
        self,
        user_id: str,
        course_id: str,
        chapter_id: str,
        *,
        status: Status | None = None,
        modified_since: datetime | None = None,
    ) -> ChapterEnrollment:
        """Get chapter enrollment for a specified course."""
        ids = {"user_id": user_id, "course_id": course_id, "chapter_id": chapter_id}
        params = _filters(modified_since, status)
        return await self._one(Op.GET_CHAPTER_ENROLLMENT, ChapterEnrollment, ids, params)

    # -- course enrollments -------------------------------------------------------------

    async def create_enrollment(
        self, user_id: str, course_id: str, *, re_enroll: bool | None = None
    ) -> EnrollmentCreated:
        """Create enrollment for user and course."""
        ids = {"user_id": user_id, "course_id": course_id}
        return await self._one(
            Op.CREATE_ENROLLMENT, EnrollmentCreated, ids, {"reEnroll": re_enroll}
        )

    async def get_user_course_enrollment(
        self,
        user_id: str,
        course_id: str,
        *,
        status: Status | None = None,
        modified_since: datetime | None = None,
    ) -> CourseEnrollment:
        """Get user's enrollment for specific course."""
        ids = {"user_id": user_id, "course_id": course_id}
        params = _filters(modified_since, status)
        return await self._one(Op.GET_USER_COURSE_ENROLLMENT, CourseEnrollment, ids, params)

    async def create_or_update_course_enrollment(
        self, user_id: str, enrollment: CourseEnrollmentUpdate, *, re_enroll: bool | None = None
    ) -> EnrollmentCreated:
        """Create or update course enrollment (status, dates, score, credits…)."""
        return await self._one(
            Op.CREATE_OR_UPDATE_COURSE_ENROLLMENT,
            EnrollmentCreated,
            {"user_id": user_id},
            {"reEnroll": re_enroll},
            enrollment.to_absorb(),
        )

    def list_user_course_enrollments(
        self,
        user_id: str,
        *,
        filter: str | None = None,
        sort: str | None = None,
        modified_since: datetime | None = None,
        status: Status | None = None,
    ) -> AsyncIterator[CourseEnrollment]:
        """List course enrollments for specific user (every page)."""
        params = _collection(filter, sort, modified_since, status)
        return self._items(
            Op.LIST_USER_COURSE_ENROLLMENTS,
            "enrollments",
            CourseEnrollment,
            {"user_id": user_id},
            params,
        )

    async def unenroll(self, enrollment_ids: Sequence[str]) -> ApiResult | None:
        """Un-enroll users from courses, by enrollment id."""
        data = await self.transport.request(Op.UNENROLL, body=list(enrollment_ids))
        if data is None:
            return None
        return parse_model(ApiResult, data, str(Op.UNENROLL.route), self.transport.secrets())

    async def get_course_enrollment(self, enrollment_id: str) -> CourseEnrollment:
        """Get course enrollment, by its id."""
        ids = {"enrollment_id": enrollment_id}
        return await self._one(Op.GET_COURSE_ENROLLMENT, CourseEnrollment, ids)

    def list_course_enrollments(
        self,
        course_id: str,
        *,
        filter: str | None = None,
        sort: str | None = None,
        modified_since: datetime | None = None,
        status: Status | None = None,
    ) -> AsyncIterator[CourseEnrollment]:
        """List enrollments for specific course (every page)."""
        params = _collection(filter, sort, modified_since, status)
        return self._items(
            Op.LIST_COURSE_ENROLLMENTS,
            "enrollments",
            CourseEnrollment,
            {"course_id": course_id},
            params,
        )

    async def list_bulk_course_enrollments(
        self, user_ids: Sequence[str], course_ids: Sequence[str]
    ) -> list[CourseEnrollment]:
        """List course enrollments for bulk user list (each given user in each given course)."""
        params = {"userIds": list(user_ids), "courseIds": list(course_ids)}
        return await self._array(Op.LIST_BULK_COURSE_ENROLLMENTS, CourseEnrollment, {}, params)

    # -- lesson enrollments -------------------------------------------------------------

    def list_lesson_enrollments(
        self,
        course_id: str,
        lesson_id: str,
        *,
        filter: str | None = None,
        sort: str | None = None,
        modified_since: datetime | None = None,
        status: Status | None = None,
    ) -> AsyncIterator[LessonEnrollment]:
        """Lists enrollments for a lesson (every page)."""
        ids = {"course_id": course_id, "lesson_id": lesson_id}
        params = _collection(filter, sort, modified_since, status)
        return self._items(
            Op.LIST_LESSON_ENROLLMENTS, "lessonEnrollments", LessonEnrollment, ids, params
        )

    async def get_lesson_enrollment_in_chapter(
        self,
        user_id: str,
        course_id: str,
        chapter_id: str,
        lesson_id: str,
        *,
        status: Status | None = None,
        modified_since: datetime | None = None,
    ) -> LessonEnrollment:
        """Get lesson enrollment, addressed through its chapter."""
        ids = {
            "user_id": user_id,
            "course_id": course_id,
            "chapter_id": chapter_id,
            "lesson_id": lesson_id,
        }
        params = _filters(modified_since, status)
        return await self._one(Op.GET_LESSON_ENROLLMENT_IN_CHAPTER, LessonEnrollment, ids, params)

    async def list_user_lesson_enrollments(
        self,
        user_id: str,
        course_id: str,
        *,
        status: Status | None = None,
        modified_since: datetime | None = None,
    ) -> list[LessonEnrollment]:
        """List user's lesson enrollments from specific course."""
        ids = {"user_id": user_id, "course_id": course_id}
        params = _filters(modified_since, status)
        return await self._array(Op.LIST_USER_LESSON_ENROLLMENTS, LessonEnrollment, ids, params)

    async def get_user_lesson_enrollment(
        self,
        user_id: str,
        course_id: str,
        lesson_id: str,
        *,
        status: Status | None = None,
        modified_since: datetime | None = None,
    ) -> LessonEnrollment:
        """Get user's lesson enrollment."""
        ids = {"user_id": user_id, "course_id": course_id, "lesson_id": lesson_id}
        params = _filters(modified_since, status)
        return await self._one(Op.GET_USER_LESSON_ENROLLMENT, LessonEnrollment, ids, params)

    async def list_user_chapter_lesson_enrollments(
        self,
        user_id: str,
        course_id: str,
        chapter_id: str,
        *,
        status: Status | None = None,
        modified_since: datetime | None = None,
    ) -> list[LessonEnrollment]:
        """List user's lesson enrollments from specific chapter."""
        ids = {"user_id": user_id, "course_id": course_id, "chapter_id": chapter_id}
        params = _filters(modified_since, status)
        return await self._array(
            Op.LIST_USER_CHAPTER_LESSON_ENROLLMENTS, LessonEnrollment, ids, params
        )

    # -- attempts -----------------------------------------------------------------------

    async def list_lesson_attempts(
        self, user_id: str, course_id: str, lesson_id: str
    ) -> list[Attempt]:
        """List user's attempts for specific lesson."""
        ids = {"user_id": user_id, "course_id": course_id, "lesson_id": lesson_id}
        return await self._array(Op.LIST_LESSON_ATTEMPTS, Attempt, ids)

    async def start_attempt(self, user_id: str, course_id: str, lesson_id: str) -> AttemptStarted:
        """Start attempt for active lesson enrollment."""
        ids = {"user_id": user_id, "course_id": course_id, "lesson_id": lesson_id}
        return await self._one(Op.START_ATTEMPT, AttemptStarted, ids)

    async def finish_attempt(self, attempt_id: str, finish: FinishAttempt) -> AttemptFinished:
        """Finish attempt, by attempt id."""
        ids = {"attempt_id": attempt_id}
        return await self._one(Op.FINISH_ATTEMPT, AttemptFinished, ids, body=finish.to_absorb())

    async def finish_user_lesson_attempt(
        self, user_id: str, course_id: str, lesson_id: str, attempt_id: str, finish: FinishAttempt
    ) -> AttemptFinished:
        """Finish a specific user's lesson attempt."""
        ids = {
            "user_id": user_id,
            "course_id": course_id,
            "lesson_id": lesson_id,
            "attempt_id": attempt_id,
        }
        return await self._one(
            Op.FINISH_USER_LESSON_ATTEMPT, AttemptFinished, ids, body=finish.to_absorb()
        )

    # -- my enrollments -----------------------------------------------------------------

    async def get_my_course_enrollment(
        self,
        course_id: str,
        *,
        status: Status | None = None,
        modified_since: datetime | None = None,
    ) -> CourseEnrollment:
        """Get currently authenticated user's course enrollment."""
        params = _filters(modified_since, status)
        return await self._one(
            Op.GET_MY_COURSE_ENROLLMENT, CourseEnrollment, {"course_id": course_id}, params
        )

    async def create_my_course_enrollment(self, course_id: str) -> EnrollmentCreated:
        """Create course enrollment for the currently authenticated user."""
        return await self._one(
            Op.CREATE_MY_COURSE_ENROLLMENT, EnrollmentCreated, {"course_id": course_id}
        )

    def list_my_course_enrollments(
        self,
        *,
        filter: str | None = None,
        sort: str | None = None,
        modified_since: datetime | None = None,
        status: Status | None = None,
    ) -> AsyncIterator[CourseEnrollment]:
        """List currently authenticated user's course enrollments (every page)."""
        params = _collection(filter, sort, modified_since, status)
        return self._items(
            Op.LIST_MY_COURSE_ENROLLMENTS, "enrollments", CourseEnrollment, None, params
        )


def _endpoint(op: Op, ids: Mapping[str, str] | None) -> str:
    return f"{op.route.method} {op.route.path(**(ids or {}))}"


def _raw_page(
    data: Any, items_key: str, endpoint: str, secrets: Sequence[str], *, limit: int, offset: int
) -> RawPage:
    """A page read leniently: only its array must be there.

    A null array is an empty page (as a .NET serializer writes an empty collection).
    Counters that are missing or not whole numbers are taken from the request and the
    array; an unknown `totalItems` lets paging go on while pages come back full.
    """
    if not isinstance(data, dict):
        raise AbsorbResponseError(
            endpoint, f"expected a page object: {excerpt(repr(data), secrets)}"
        )
    items = data.get(items_key)
    if items is None and items_key in data:
        items = []
    if not isinstance(items, list):
        shown = "missing" if items is None else f"a {type(items).__name__}, not an array"
        raise AbsorbResponseError(
            endpoint, f"'{items_key}' is {shown}: {excerpt(repr(data), secrets)}"
        )
    limit = _count(data.get("limit")) or limit
    offset = _count(data.get("offset"), offset)
    total = _count(data.get("totalItems"))
    if total is None:
        total = offset * limit + len(items) + (1 if len(items) >= limit else 0)
    return RawPage(
        total_items=total,
        returned_items=_count(data.get("returnedItems"), len(items)),
        limit=limit,
        offset=offset,
        items=items,
    )


@overload
def _count(value: Any) -> int | None: ...
@overload
def _count(value: Any, default: int) -> int: ...
def _count(value: Any, default: int | None = None) -> int | None:
    """A page counter: a whole number of zero or more, else `default`."""
    if isinstance(value, bool):
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else default
