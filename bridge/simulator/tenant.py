"""The simulated tenant: its records, the writes Absorb allows, and a log of every change.

Every write stamps `dateEdited` from the simulator's clock on each record it
touches, and keeps the course enrollment consistent with its lessons, chapters
and sessions the way Absorb does.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bridge.absorb.models import AttemptStatus, Status
from bridge.simulator.records import (
    AttemptRec,
    ChapterEnrollmentRec,
    Course,
    CourseEnrollmentRec,
    Lesson,
    LessonEnrollmentRec,
    Session,
    SessionEnrollmentRec,
    User,
)
from bridge.simulator.simclock import SimClock

Record = CourseEnrollmentRec | LessonEnrollmentRec | ChapterEnrollmentRec | SessionEnrollmentRec

_UUID_MASK = ~(0xF000 << 64 | 0xC000 << 48) & (1 << 128) - 1
_UUID_V4 = 0x4000 << 64 | 0x8000 << 48

#: A lesson failed this many times fails its course enrollment.
MAX_LESSON_FAILURES = 2
_WAITING = {Status.PendingApproval, Status.OnWaitlist}
_NOT_STARTED_STATUSES = {Status.NotStarted, *_WAITING}


_KINDS: dict[type, str] = {
    CourseEnrollmentRec: "course_enrollment",
    LessonEnrollmentRec: "lesson_enrollment",
    ChapterEnrollmentRec: "chapter_enrollment",
    SessionEnrollmentRec: "session_enrollment",
}


class SimError(Exception):
    """A request the simulated Absorb refuses; `status` is the HTTP status to reply with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Change:
    """One status change the simulator made, for tests to compare the bridge's events with."""

    seq: int
    kind: str
    id: str
    enrollment_id: str
    previous_status: int | None
    status: int | None
    date_edited: datetime

    def to_json(self) -> dict[str, Any]:
        """The change as the control API lists it."""
        return {
            "seq": self.seq,
            "kind": self.kind,
            "id": self.id,
            "enrollmentId": self.enrollment_id,
            "previousStatus": self.previous_status,
            "status": self.status,
            "dateEdited": self.date_edited.isoformat(),
        }


class Tenant:
    """Everything one simulated Absorb tenant holds, with indexes for fast listing."""

    def __init__(self, clock: SimClock, rng: random.Random, *, change_log_size: int = 100_000):
        self.clock = clock
        self.rng = rng
        self.users: dict[str, User] = {}
        self.courses: dict[str, Course] = {}
        self.lessons: dict[str, Lesson] = {}
        self.sessions: dict[str, tuple[Course, Session]] = {}
        self.enrollments: dict[str, CourseEnrollmentRec] = {}
        self.by_course: dict[str, dict[str, CourseEnrollmentRec]] = {}
        self.by_user: dict[str, dict[str, CourseEnrollmentRec]] = {}
        self.active: dict[tuple[str, str], CourseEnrollmentRec] = {}
        self.lesson_enrollments: dict[str, LessonEnrollmentRec] = {}
        self.by_lesson: dict[str, dict[str, LessonEnrollmentRec]] = {}
        self.chapter_enrollments: dict[str, ChapterEnrollmentRec] = {}
        self.session_enrollments: dict[str, SessionEnrollmentRec] = {}
        self.by_session: dict[str, dict[str, SessionEnrollmentRec]] = {}
        self.attempts: dict[str, AttemptRec] = {}
        #: Bumped on every write to a scope, so cached query results know when they are stale.
        self.versions: dict[str, int] = {}
        self.changes: deque[Change] = deque(maxlen=change_log_size)
        self._seq = 0
        #: While generating history nothing is logged or versioned: nobody has looked yet.
        self.quiet = False
        #: Told of every logged change as it happens (the webhook announcer listens here).
        self.on_change: Callable[[Change], None] | None = None

    # -- ids, stamps and the change log -------------------------------------------------

    def new_id(self) -> str:
        """A version-4 GUID from the tenant's seeded generator (deterministic per seed)."""
        # Formatting the bits directly is several times faster than uuid.UUID, which
        # matters when a tenant of a million enrollments is generated.
        h = "%032x" % (self.rng.getrandbits(128) & _UUID_MASK | _UUID_V4)
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def touch(self, *scopes: str) -> None:
        """Mark scopes (`course:…`, `lesson:…`, `session:…`, `user:…`) as changed."""
        if self.quiet:
            return
        for scope in scopes:
            self.versions[scope] = self.versions.get(scope, 0) + 1

    def _touch_enrollment(self, ce: CourseEnrollmentRec) -> None:
        self.touch(f"course:{ce.course.id}", f"user:{ce.user.id}")

    def touch_record(self, rec: Record) -> None:
        """Mark the scopes that list `rec` as changed."""
        if isinstance(rec, CourseEnrollmentRec):
            self._touch_enrollment(rec)
        elif isinstance(rec, LessonEnrollmentRec):
            self.touch(f"lesson:{rec.lesson.id}")
        elif isinstance(rec, SessionEnrollmentRec):
            self.touch(f"session:{rec.session.id}")

    def log_change(self, rec: Record, old: int | None, at: datetime) -> None:
        """Record a status change made directly (control API) in the change log."""
        enrollment = rec if isinstance(rec, CourseEnrollmentRec) else rec.enrollment
        self._log(_KINDS[type(rec)], rec.id, enrollment.id, old, rec.status, at)

    def _log(
        self, kind: str, rec_id: str, ce_id: str, old: int | None, new: int | None, at: datetime
    ) -> None:
        if old == new or self.quiet:
            return
        self._seq += 1
        change = Change(self._seq, kind, rec_id, ce_id, old, new, at)
        self.changes.append(change)
        if self.on_change is not None:
            self.on_change(change)

    @property
    def last_change_seq(self) -> int:
        """Sequence number of the newest change (0 when none)."""
        return self._seq

    # -- building the tenant ------------------------------------------------------------

    def add_user(self, user: User) -> None:
        """Add a learner."""
        self.users[user.id] = user
        self.by_user.setdefault(user.id, {})

    def add_course(self, course: Course) -> None:
        """Add a course with its chapters, lessons and sessions."""
        self.courses[course.id] = course
        self.by_course.setdefault(course.id, {})
        for lesson in course.lessons:
            self.lessons[lesson.id] = lesson
            self.by_lesson.setdefault(lesson.id, {})
        for session in course.sessions:
            self.sessions[session.id] = (course, session)
            self.by_session.setdefault(session.id, {})

    # -- lookups ------------------------------------------------------------------------

    def user(self, user_id: str) -> User:
        """A user by id, or 404."""
        found = self.users.get(user_id.lower())
        if found is None:
            raise SimError(404, f"User {user_id} was not found.")
        return found

    def course(self, course_id: str) -> Course:
        """A course by id, or 404."""
        found = self.courses.get(course_id.lower())
        if found is None:
            raise SimError(404, f"Course {course_id} was not found.")
        return found

    def active_enrollment(self, user_id: str, course_id: str) -> CourseEnrollmentRec:
        """The user's current enrollment in the course, or 404."""
        user, course = self.user(user_id), self.course(course_id)
        found = self.active.get((user.id, course.id))
        if found is None:
            raise SimError(404, f"User {user.id} is not enrolled in course {course.id}.")
        return found

    def lesson_enrollment(
        self, user_id: str, course_id: str, lesson_id: str
    ) -> LessonEnrollmentRec:
        """The user's enrollment in a lesson of their current course enrollment, or 404."""
        ce = self.active_enrollment(user_id, course_id)
        for le in ce.lessons:
            if le.lesson.id == lesson_id.lower():
                return le
        raise SimError(404, f"No enrollment in lesson {lesson_id} for this course enrollment.")

    # -- writes -------------------------------------------------------------------------

    def enroll(self, user: User, course: Course, *, re_enroll: bool = False) -> CourseEnrollmentRec:
        """Enroll a user (re-enrolling turns the current enrollment historical)."""
        current = self.active.get((user.id, course.id))
        if current is not None and not re_enroll:
            return current
        now = self.clock.now()
        if current is not None:
            current.is_active = False
            current.date_edited = now
            self._touch_enrollment(current)
        status = Status.PendingApproval if course.requires_approval else Status.NotStarted
        ce = CourseEnrollmentRec(
            id=self.new_id(),
            user=user,
            course=course,
            status=status,
            date_added=now,
            date_edited=now,
        )
        self.enrollments[ce.id] = ce
        self.by_course[course.id][ce.id] = ce
        self.by_user[user.id][ce.id] = ce
        self.active[(user.id, course.id)] = ce
        if status not in _WAITING:
            self._materialize(ce, now)
        self._touch_enrollment(ce)
        self._log("course_enrollment", ce.id, ce.id, None, status, now)
        return ce

    def set_status(
        self, ce: CourseEnrollmentRec, status: int, *, at: datetime | None = None
    ) -> None:
        """Set a course enrollment's status the way an admin would, with its dates."""
        now = at or self.clock.now()
        old = ce.status
        ce.status = status
        if status == Status.Complete:
            ce.progress = 100.0
            ce.date_completed = ce.date_completed or now
        elif status in (Status.InProgress, Status.Failed, Status.NotComplete):
            ce.date_started = ce.date_started or now
            ce.date_completed = None
        if status not in _WAITING and not ce.chapters:
            self._materialize(ce, now)
        ce.date_edited = now
        self._touch_enrollment(ce)
        self._log("course_enrollment", ce.id, ce.id, old, status, now)

    def update(self, ce: CourseEnrollmentRec, fields: dict[str, Any]) -> None:
        """Apply the settable fields of "Create or update course enrollment"."""
        now = self.clock.now()
        if "score" in fields:
            ce.score = fields["score"]
        if "credits" in fields:
            ce.credits = fields["credits"]
        if "dateExpires" in fields:
            ce.date_expires = fields["dateExpires"]
        if "courseVersionId" in fields:
            ce.course_version_id = fields["courseVersionId"]
        if "acceptedTermsAndConditions" in fields:
            ce.accepted_terms_and_conditions = bool(fields["acceptedTermsAndConditions"])
        if "enrollmentKeyId" in fields:
            ce.enrollment_key_id = fields["enrollmentKeyId"]
        if fields.get("status") is not None and fields["status"] != ce.status:
            self.set_status(ce, int(fields["status"]), at=now)
        if "dateCompleted" in fields:
            ce.date_completed = fields["dateCompleted"]
        ce.date_edited = now
        self._touch_enrollment(ce)

    def unenroll(self, ce: CourseEnrollmentRec) -> None:
        """Remove an enrollment and everything under it: it is gone from every list."""
        now = self.clock.now()
        # Logged first, so that whoever watches changes can still look the enrollment up.
        self._log("course_enrollment", ce.id, ce.id, ce.status, None, now)
        del self.enrollments[ce.id]
        del self.by_course[ce.course.id][ce.id]
        del self.by_user[ce.user.id][ce.id]
        if self.active.get((ce.user.id, ce.course.id)) is ce:
            del self.active[(ce.user.id, ce.course.id)]
        for le in ce.lessons:
            self.lesson_enrollments.pop(le.id, None)
            self.by_lesson[le.lesson.id].pop(le.id, None)
            self.touch(f"lesson:{le.lesson.id}")
            for attempt in le.attempt_list:
                self.attempts.pop(attempt.id, None)
        for chapter in ce.chapters:
            self.chapter_enrollments.pop(chapter.id, None)
        for se in ce.sessions:
            self.session_enrollments.pop(se.id, None)
            self.by_session[se.session.id].pop(se.id, None)
            self.touch(f"session:{se.session.id}")
        self._touch_enrollment(ce)

    def _materialize(self, ce: CourseEnrollmentRec, now: datetime) -> None:
        # Activity enrollments exist once the learner is let into the course (not while
        # the enrollment waits for approval or on a waitlist).
        for chapter in ce.course.chapters:
            che = ChapterEnrollmentRec(
                id=self.new_id(),
                enrollment=ce,
                chapter=chapter,
                status=Status.NotStarted,
                date_enrolled=now,
                date_edited=now,
            )
            ce.chapters.append(che)
            self.chapter_enrollments[che.id] = che
            for lesson in chapter.lessons:
                le = LessonEnrollmentRec(
                    id=self.new_id(),
                    enrollment=ce,
                    chapter_enrollment=che,
                    lesson=lesson,
                    status=Status.NotStarted,
                    date_enrolled=now,
                    date_edited=now,
                )
                che.lessons.append(le)
                ce.lessons.append(le)
                self.lesson_enrollments[le.id] = le
                self.by_lesson[lesson.id][le.id] = le
                self.touch(f"lesson:{lesson.id}")

    def enroll_session(
        self, user: User, course: Course, session: Session, *, re_enroll: bool, cancel: bool
    ) -> tuple[CourseEnrollmentRec, SessionEnrollmentRec | None]:
        """Create ILC enrollment for user: enroll in the course and the session (or cancel it)."""
        ce = self.enroll(user, course, re_enroll=re_enroll)
        now = self.clock.now()
        current = next((se for se in ce.sessions if se.session.id == session.id), None)
        if cancel:
            if current is not None:
                ce.sessions.remove(current)
                del self.session_enrollments[current.id]
                del self.by_session[session.id][current.id]
                self.touch(f"session:{session.id}")
                self._log("session_enrollment", current.id, ce.id, current.status, None, now)
            return ce, None
        if current is not None:
            return ce, current
        taken = sum(
            1 for se in self.by_session[session.id].values() if se.status != Status.OnWaitlist
        )
        status = Status.OnWaitlist if taken >= session.capacity else Status.NotStarted
        se = SessionEnrollmentRec(
            id=self.new_id(),
            enrollment=ce,
            session=session,
            status=status,
            date_enrolled=now,
            date_edited=now,
        )
        ce.sessions.append(se)
        self.session_enrollments[se.id] = se
        self.by_session[session.id][se.id] = se
        self.touch(f"session:{session.id}")
        self._log("session_enrollment", se.id, ce.id, None, status, now)
        if ce.status in _NOT_STARTED_STATUSES and status == Status.NotStarted:
            self.set_status(ce, Status.InProgress, at=now)
        return ce, se

    def mark_session(
        self, se: SessionEnrollmentRec, status: int, score: float | None = None
    ) -> None:
        """Record attendance of an ILC session (Complete, Absent, Failed…); the course follows."""
        now = self.clock.now()
        old = se.status
        se.status, se.score, se.date_edited = status, score, now
        if status == Status.Complete:
            se.progress, se.date_completed = 100.0, now
        se.date_started = se.date_started or now
        self.touch(f"session:{se.session.id}")
        self._log("session_enrollment", se.id, se.enrollment.id, old, status, now)
        if status in (Status.Complete, Status.Failed, Status.Absent):
            ce = se.enrollment
            ce.score = score
            ce.time_spent += timedelta(hours=2)
            self.set_status(ce, Status.NotComplete if status == Status.Absent else status, at=now)

    def start_attempt(self, le: LessonEnrollmentRec) -> AttemptRec:
        """Start attempt for active lesson enrollment: the lesson and course are now in progress."""
        ce = le.enrollment
        if not ce.is_active or ce.status in _WAITING:
            raise SimError(400, "The lesson enrollment is not active.")
        now = self.clock.now()
        attempt = AttemptRec(
            id=self.new_id(), lesson_enrollment=le, status=AttemptStatus.InProgress, start_date=now
        )
        le.attempt_list.append(attempt)
        self.attempts[attempt.id] = attempt
        le.attempts += 1
        le.last_attempt = now
        self._set_lesson_status(le, Status.InProgress, now)
        if ce.status == Status.NotStarted:
            self.set_status(ce, Status.InProgress, at=now)
        return attempt

    def finish_attempt(
        self,
        attempt: AttemptRec,
        status: int,
        score: float | None,
        start_date: datetime | None = None,
        completion_date: datetime | None = None,
    ) -> None:
        """Finish attempt: the lesson takes its result, and the chapter and course follow."""
        now = self.clock.now()
        le = attempt.lesson_enrollment
        attempt.status = status
        attempt.score = score
        attempt.start_date = start_date or attempt.start_date
        if status != AttemptStatus.InProgress:
            attempt.completion_date = completion_date or now
            attempt.time_spent = attempt.completion_date - attempt.start_date
            le.time_spent += attempt.time_spent
            le.enrollment.time_spent += attempt.time_spent
        le.score = score if score is not None else le.score
        if status == AttemptStatus.Failed:
            le.failures += 1
        lesson_status = {
            AttemptStatus.Complete: Status.Complete,
            AttemptStatus.Failed: Status.Failed,
        }.get(AttemptStatus(status), Status.InProgress)
        self._set_lesson_status(le, lesson_status, now)
        self._roll_up(le.enrollment, now)

    def _set_lesson_status(self, le: LessonEnrollmentRec, status: int, now: datetime) -> None:
        old = le.status
        le.status = status
        le.date_started = le.date_started or now
        if status == Status.Complete:
            le.progress, le.date_completed = 100.0, now
        le.date_edited = now
        self.touch(f"lesson:{le.lesson.id}")
        self._log("lesson_enrollment", le.id, le.enrollment.id, old, status, now)
        che = le.chapter_enrollment
        done = sum(1 for x in che.lessons if x.status == Status.Complete)
        old_chapter = che.status
        che.progress = round(100.0 * done / len(che.lessons), 2)
        if done == len(che.lessons):
            che.status, che.date_completed = Status.Complete, che.date_completed or now
        else:
            che.status = Status.InProgress
        che.date_started = che.date_started or now
        che.date_edited = now
        self._log("chapter_enrollment", che.id, le.enrollment.id, old_chapter, che.status, now)

    def _roll_up(self, ce: CourseEnrollmentRec, now: datetime) -> None:
        lessons = ce.lessons
        done = sum(1 for le in lessons if le.status == Status.Complete)
        ce.progress = round(100.0 * done / len(lessons), 2) if lessons else 0.0
        scores = [le.score for le in lessons if le.score is not None]
        ce.score = round(sum(scores) / len(scores), 2) if scores else None
        if lessons and done == len(lessons):
            status: int = Status.Complete
        elif any(le.failures >= MAX_LESSON_FAILURES for le in lessons):
            status = Status.Failed
        else:
            status = Status.InProgress
        if status != ce.status:
            self.set_status(ce, status, at=now)
        else:
            ce.date_edited = now
            self._touch_enrollment(ce)
