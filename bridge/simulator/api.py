"""Absorb's enrollment operations, served at the paths of the one route table."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from bridge.absorb.models import AttemptStatus, Status
from bridge.absorb.paths import Op
from bridge.absorb.timefmt import parse_datetime
from bridge.simulator.odata import FieldSpec
from bridge.simulator.queries import page_body, parse_query, select
from bridge.simulator.records import (
    COURSE_ENROLLMENT_FIELDS,
    COURSE_FIELDS,
    LESSON_ENROLLMENT_FIELDS,
    SESSION_ENROLLMENT_FIELDS,
    CourseEnrollmentRec,
)
from bridge.simulator.server import Simulator, json_response
from bridge.simulator.tenant import SimError

Endpoint = Callable[["AbsorbApi", web.Request], Any]
_SETTABLE = {
    "status", "dateCompleted", "dateExpires", "courseVersionId",
    "acceptedTermsAndConditions", "enrollmentKeyId", "credits", "score",
}  # fmt: skip


def add_routes(app: web.Application, sim: Simulator) -> None:
    """Register one handler per operation of the route table."""
    api = AbsorbApi(sim)
    for op, method in _HANDLERS.items():
        app.router.add_route(op.route.method, op.route.template, api.bind(method))


class AbsorbApi:
    """Request handlers; each returns the JSON body Absorb would send."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.tenant = sim.tenant

    def bind(self, method: Endpoint) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                result = method(self, request)
                if hasattr(result, "__await__"):
                    result = await result
            except _Reply as reply:
                return reply.response
            if isinstance(result, web.StreamResponse):
                return result
            return json_response(result)

        return handle

    # -- helpers ------------------------------------------------------------------------

    def _page(
        self,
        request: web.Request,
        scope: str,
        records: Callable[[], Iterable[Any]],
        fields: Mapping[str, FieldSpec],
        key: str,
    ) -> dict[str, Any]:
        query = parse_query(request.query, paged=True)
        items = self.sim.cache.select(
            scope, self.tenant.versions.get(scope, 0), records, fields, query
        )
        if self.sim.faults.mutate_while_paging:
            # The harshest edits: records of this very list, on pages already served.
            served = items[: query.offset * query.limit] or items or list(records())
            self._mutate(served, self.sim.faults.mutate_while_paging)
            version = self.tenant.versions.get(scope, 0)
            items = self.sim.cache.select(scope, version, records, fields, query)
        if any(getattr(r, "duplicated", False) for r in items):
            items = [c for r in items for c in [r] * (2 if getattr(r, "duplicated", False) else 1)]
        return page_body(items, query, key, lambda r: r.to_json())

    def _array(self, request: web.Request, records: Iterable[Any]) -> list[Any]:
        query = parse_query(request.query, paged=False)
        return [r.to_json() for r in select(records, {}, query)]

    def _mutate(self, records: list[Any], count: int) -> None:
        # Edits between two page requests, as learners keep working while a client pages.
        rng = self.sim.fault_rng
        for rec in rng.sample(records, min(count, len(records))):
            if isinstance(rec, CourseEnrollmentRec) and rec.is_active and rng.random() < 0.5:
                new = rng.choice(
                    [
                        s
                        for s in (Status.InProgress, Status.Complete, Status.NotComplete)
                        if s != rec.status
                    ]
                )
                self.tenant.set_status(rec, new)
            else:
                rec.date_edited = self.sim.clock.now()
                if hasattr(rec, "progress") and rec.progress < 100:
                    rec.progress = min(100.0, rec.progress + 5.0)
                self.tenant.touch_record(rec)

    async def _json(self, request: web.Request) -> Any:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SimError(400, "The request body is not valid JSON.") from None

    def _ids(self, request: web.Request, key: str) -> list[str]:
        values = [v for raw in request.query.getall(key, []) for v in raw.split(",") if v]
        return [v.strip().lower() for v in values]

    # -- courses ------------------------------------------------------------------------

    def list_courses(self, request: web.Request) -> Any:
        return self._page(
            request, "courses", lambda: self.tenant.courses.values(), COURSE_FIELDS, "courses"
        )

    # -- session enrollments ------------------------------------------------------------

    def list_user_session_enrollments(self, request: web.Request) -> Any:
        m = request.match_info
        return self._array(
            request, self.tenant.active_enrollment(m["user_id"], m["course_id"]).sessions
        )

    def get_user_session_enrollment(self, request: web.Request) -> Any:
        m = request.match_info
        ce = self.tenant.active_enrollment(m["user_id"], m["course_id"])
        for se in ce.sessions:
            if se.session.id == m["session_id"].lower():
                return se.to_json()
        raise SimError(404, f"No enrollment in session {m['session_id']}.")

    def create_ilc_enrollment(self, request: web.Request) -> Any:
        m = request.match_info
        user, course = self.tenant.user(m["user_id"]), self.tenant.course(m["course_id"])
        found = self.tenant.sessions.get(m["session_id"].lower())
        if found is None or found[0] is not course:
            raise SimError(
                404, f"Session {m['session_id']} is not a session of course {course.id}."
            )
        ce, se = self.tenant.enroll_session(
            user,
            course,
            found[1],
            re_enroll=_flag(request, "reEnroll"),
            cancel=_flag(request, "cancelSession"),
        )
        return {
            "userId": user.id,
            "courseId": course.id,
            "sessionId": found[1].id,
            "enrollmentId": ce.id,
            "sessionEnrollmentId": se.id if se else None,
        }

    def list_session_enrollments(self, request: web.Request) -> Any:
        m = request.match_info
        course = self.tenant.course(m["course_id"])
        session_id = m["session_id"].lower()
        if (
            session_id not in self.tenant.by_session
            or self.tenant.sessions[session_id][0] is not course
        ):
            raise SimError(404, f"Session {m['session_id']} was not found in course {course.id}.")
        records = self.tenant.by_session[session_id]
        return self._page(
            request,
            f"session:{session_id}",
            records.values,
            SESSION_ENROLLMENT_FIELDS,
            "enrollments",
        )

    # -- chapter enrollments ------------------------------------------------------------

    def list_chapter_enrollments(self, request: web.Request) -> Any:
        return self._array(request, self._drilled(request).chapters)

    def get_chapter_enrollment(self, request: web.Request) -> Any:
        m = request.match_info
        ce = self.tenant.active_enrollment(m["user_id"], m["course_id"])
        for che in ce.chapters:
            if che.chapter.id == m["chapter_id"].lower():
                return che.to_json()
        raise SimError(404, f"No enrollment in chapter {m['chapter_id']}.")

    # -- course enrollments -------------------------------------------------------------

    def create_enrollment(self, request: web.Request) -> Any:
        m = request.match_info
        user, course = self.tenant.user(m["user_id"]), self.tenant.course(m["course_id"])
        ce = self.tenant.enroll(user, course, re_enroll=_flag(request, "reEnroll"))
        return {"enrollmentId": ce.id, "courseId": course.id, "userId": user.id}

    def get_user_course_enrollment(self, request: web.Request) -> Any:
        m = request.match_info
        return self.tenant.active_enrollment(m["user_id"], m["course_id"]).to_json()

    async def create_or_update_course_enrollment(self, request: web.Request) -> Any:
        user = self.tenant.user(request.match_info["user_id"])
        body = await self._json(request)
        if not isinstance(body, dict) or not body.get("courseId"):
            raise SimError(400, "The body must be an enrollment with a courseId.")
        course = self.tenant.course(str(body["courseId"]))
        ce = self.tenant.active.get((user.id, course.id))
        if ce is None or _flag(request, "reEnroll"):
            ce = self.tenant.enroll(user, course, re_enroll=_flag(request, "reEnroll"))
        self.tenant.update(ce, _settable(body))
        return {"enrollmentId": ce.id, "courseId": course.id, "userId": user.id}

    def list_user_course_enrollments(self, request: web.Request) -> Any:
        user = self.tenant.user(request.match_info["user_id"])
        records = self.tenant.by_user[user.id]
        return self._page(
            request, f"user:{user.id}", records.values, COURSE_ENROLLMENT_FIELDS, "enrollments"
        )

    async def unenroll(self, request: web.Request) -> Any:
        body = await self._json(request)
        if not isinstance(body, list) or not all(isinstance(i, str) for i in body):
            raise SimError(400, "The body must be a JSON array of enrollment ids.")
        missing = [i for i in body if i.lower() not in self.tenant.enrollments]
        if missing:
            raise SimError(404, f"Enrollment(s) not found: {', '.join(missing)}")
        for enrollment_id in body:
            self.tenant.unenroll(self.tenant.enrollments[enrollment_id.lower()])
        return {
            "validations": [],
            "code": 0,
            "message": f"Unenrolled {len(body)}.",
            "term": None,
            "_meta": {},
        }

    def get_course_enrollment(self, request: web.Request) -> Any:
        ce = self.tenant.enrollments.get(request.match_info["enrollment_id"].lower())
        if ce is None:
            raise SimError(404, f"Enrollment {request.match_info['enrollment_id']} was not found.")
        return ce.to_json()

    def list_course_enrollments(self, request: web.Request) -> Any:
        course = self.tenant.course(request.match_info["course_id"])
        records = self.tenant.by_course[course.id]
        return self._page(
            request, f"course:{course.id}", records.values, COURSE_ENROLLMENT_FIELDS, "enrollments"
        )

    def list_bulk_course_enrollments(self, request: web.Request) -> Any:
        users, courses = self._ids(request, "userIds"), self._ids(request, "courseIds")
        if not users or not courses:
            raise SimError(400, "userIds and courseIds are both required.")
        found = (self.tenant.active.get((u, c)) for u in users for c in courses)
        return [ce.to_json() for ce in found if ce is not None]

    # -- lesson enrollments -------------------------------------------------------------

    def list_lesson_enrollments(self, request: web.Request) -> Any:
        m = request.match_info
        course = self.tenant.course(m["course_id"])
        lesson = self.tenant.lessons.get(m["lesson_id"].lower())
        if lesson is None or lesson not in course.lessons:
            raise SimError(404, f"Lesson {m['lesson_id']} was not found in course {course.id}.")
        records = self.tenant.by_lesson[lesson.id]
        return self._page(
            request,
            f"lesson:{lesson.id}",
            records.values,
            LESSON_ENROLLMENT_FIELDS,
            "lessonEnrollments",
        )

    def get_lesson_enrollment_in_chapter(self, request: web.Request) -> Any:
        m = request.match_info
        le = self.tenant.lesson_enrollment(m["user_id"], m["course_id"], m["lesson_id"])
        if le.lesson.chapter.id != m["chapter_id"].lower():
            raise SimError(404, f"Lesson {m['lesson_id']} is not in chapter {m['chapter_id']}.")
        return le.to_json()

    def _drilled(self, request: web.Request) -> CourseEnrollmentRec:
        """The enrollment a drill-down list is of; its forced fault, if any, is played here."""
        m = request.match_info
        ce = self.tenant.active_enrollment(m["user_id"], m["course_id"])
        if ce.drill_down_fault == "404":
            raise SimError(404, f"User {m['user_id']} was not found.")
        if ce.drill_down_fault == "not_array":
            raise _Reply(json_response({"message": "An error has occurred.", "items": None}))
        if ce.drill_down_fault == "empty":
            raise _Reply(web.Response(status=200, content_type="application/json"))
        return ce

    def list_user_lesson_enrollments(self, request: web.Request) -> Any:
        return self._array(request, self._drilled(request).lessons)

    def get_user_lesson_enrollment(self, request: web.Request) -> Any:
        m = request.match_info
        return self.tenant.lesson_enrollment(m["user_id"], m["course_id"], m["lesson_id"]).to_json()

    def list_user_chapter_lesson_enrollments(self, request: web.Request) -> Any:
        m = request.match_info
        ce = self.tenant.active_enrollment(m["user_id"], m["course_id"])
        for che in ce.chapters:
            if che.chapter.id == m["chapter_id"].lower():
                return self._array(request, che.lessons)
        raise SimError(404, f"No enrollment in chapter {m['chapter_id']}.")

    # -- attempts -----------------------------------------------------------------------

    def list_lesson_attempts(self, request: web.Request) -> Any:
        m = request.match_info
        self._drilled(request)
        le = self.tenant.lesson_enrollment(m["user_id"], m["course_id"], m["lesson_id"])
        return [a.to_json() for a in le.attempt_list]

    def start_attempt(self, request: web.Request) -> Any:
        m = request.match_info
        le = self.tenant.lesson_enrollment(m["user_id"], m["course_id"], m["lesson_id"])
        attempt = self.tenant.start_attempt(le)
        return {"attemptId": attempt.id, "courseId": le.enrollment.course.id, "userId": le.user_id}

    async def finish_attempt(self, request: web.Request) -> Any:
        attempt = self.tenant.attempts.get(request.match_info["attempt_id"].lower())
        if attempt is None:
            raise SimError(404, f"Attempt {request.match_info['attempt_id']} was not found.")
        return await self._finish(request, attempt)

    async def finish_user_lesson_attempt(self, request: web.Request) -> Any:
        m = request.match_info
        le = self.tenant.lesson_enrollment(m["user_id"], m["course_id"], m["lesson_id"])
        attempt = next((a for a in le.attempt_list if a.id == m["attempt_id"].lower()), None)
        if attempt is None:
            raise SimError(404, f"Attempt {m['attempt_id']} was not found on this lesson.")
        return await self._finish(request, attempt)

    async def _finish(self, request: web.Request, attempt: Any) -> Any:
        body = await self._json(request)
        if not isinstance(body, dict) or body.get("status") not in {s.value for s in AttemptStatus}:
            raise SimError(400, "status is required and must be 1, 3 or 5.")
        try:
            start = parse_datetime(body["startDate"]) if body.get("startDate") else None
            done = parse_datetime(body["completionDate"]) if body.get("completionDate") else None
            score = float(body["score"]) if body.get("score") is not None else None
        except (TypeError, ValueError) as e:
            raise SimError(400, f"Invalid attempt body: {e}") from None
        self.tenant.finish_attempt(attempt, int(body["status"]), score, start, done)
        return {"attemptId": attempt.id}

    # -- my enrollments -----------------------------------------------------------------

    def get_my_course_enrollment(self, request: web.Request) -> Any:
        return self.tenant.active_enrollment(
            self.sim.admin.id, request.match_info["course_id"]
        ).to_json()

    def create_my_course_enrollment(self, request: web.Request) -> Any:
        course = self.tenant.course(request.match_info["course_id"])
        ce = self.tenant.enroll(self.sim.admin, course)
        return {"enrollmentId": ce.id, "courseId": course.id, "userId": self.sim.admin.id}

    def list_my_course_enrollments(self, request: web.Request) -> Any:
        admin = self.sim.admin.id
        records = self.tenant.by_user[admin]
        return self._page(
            request, f"user:{admin}", records.values, COURSE_ENROLLMENT_FIELDS, "enrollments"
        )

    async def authenticate(self, request: web.Request) -> Any:
        body = await self._json(request)
        if not isinstance(body, dict):
            raise SimError(400, "The body must be a JSON object.")
        token = self.sim.auth.authenticate(
            str(body.get("username", "")),
            str(body.get("password", "")),
            str(body.get("privateKey", "")),
        )
        if token is None:
            raise SimError(401, "Invalid credentials.")
        return token


class _Reply(Exception):
    """A reply other than the endpoint's JSON, raised from deep inside a handler."""

    def __init__(self, response: web.Response) -> None:
        super().__init__("reply")
        self.response = response


def _flag(request: web.Request, key: str) -> bool:
    return request.query.get(key, "").lower() == "true"


def _settable(body: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {k: v for k, v in body.items() if k in _SETTABLE}
    try:
        for key in ("dateCompleted", "dateExpires"):
            if isinstance(fields.get(key), str):
                fields[key] = parse_datetime(fields[key])
        if fields.get("status") is not None:
            fields["status"] = Status(int(fields["status"]))
    except (TypeError, ValueError) as e:
        raise SimError(400, f"Invalid enrollment body: {e}") from None
    return fields


_HANDLERS: dict[Op, Endpoint] = {op: getattr(AbsorbApi, op.name.lower()) for op in Op}
