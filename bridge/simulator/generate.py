"""A deterministic tenant: the same seed and sizes give the same users, courses and history."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.absorb.models import AttemptStatus, Status
from bridge.simulator.records import Chapter, Course, CourseEnrollmentRec, Lesson, Session, User
from bridge.simulator.simclock import SimClock
from bridge.simulator.tenant import Tenant

_FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Barbara",
    "Ken",
    "Margaret",
    "Dennis",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Katherine",
    "Donald",
    "Shafi",
    "Niklaus",
    "Leslie",
    "Hedy",
]
_LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Liskov",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
    "Johnson",
    "Knuth",
    "Goldwasser",
    "Wirth",
]
_JOBS = ["Nurse", "Engineer", "Sales Associate", "Technician", "Manager", "Analyst", None]
_TOPICS = [
    "Workplace Safety",
    "Data Privacy",
    "Anti-Harassment",
    "Fire Warden",
    "First Aid",
    "Forklift Operation",
    "Customer Care",
    "Code of Conduct",
    "Cyber Awareness",
    "Leadership Basics",
    "Infection Control",
    "Export Compliance",
]


@dataclass(frozen=True)
class TenantSpec:
    """How big a tenant to generate."""

    seed: int = 1
    users: int = 200
    courses: int = 20
    chapters_per_course: int = 2
    lessons_per_chapter: int = 2
    sessions_per_ilc: int = 2
    #: Share of all user x course pairs that hold an enrollment.
    enrollment_ratio: float = 0.3
    #: Share of courses that are instructor-led.
    ilc_ratio: float = 0.2
    #: Share of online courses that need an admin's approval before a learner starts.
    approval_ratio: float = 0.1
    history_days: int = 30


class _HistoryClock(SimClock):
    """A clock the generator sets by hand while it plays out the past."""

    def __init__(self) -> None:
        super().__init__()
        self.at = datetime(2020, 1, 1)

    def now(self) -> datetime:
        return self.at


def generate(spec: TenantSpec, clock: SimClock, admin: User) -> Tenant:
    """Build a tenant whose enrollments already have a past (progress, completions, failures)."""
    rng = random.Random(spec.seed)
    history = _HistoryClock()
    tenant = Tenant(history, rng)
    tenant.quiet = True
    tenant.add_user(admin)
    for _ in range(spec.users):
        tenant.add_user(
            User(tenant.new_id(), rng.choice(_FIRST), rng.choice(_LAST), rng.choice(_JOBS))
        )
    start = clock.now() - timedelta(days=spec.history_days)
    for i in range(spec.courses):
        tenant.add_course(_course(tenant, rng, spec, i, start))
    users = list(tenant.users.values())
    pairs = len(users) * len(tenant.courses)
    wanted = round(pairs * spec.enrollment_ratio)
    span_s = spec.history_days * 86_400
    for index in sorted(rng.sample(range(pairs), wanted)) if wanted < pairs else range(pairs):
        user = users[index // len(tenant.courses)]
        course = list(tenant.courses.values())[index % len(tenant.courses)]
        history.at = start + timedelta(seconds=rng.uniform(0, span_s * 0.8))
        ce = tenant.enroll(user, course)
        _play_history(tenant, rng, history, ce)
    tenant.clock = clock
    tenant.quiet = False
    return tenant


def _course(
    tenant: Tenant, rng: random.Random, spec: TenantSpec, i: int, start: datetime
) -> Course:
    topic = _TOPICS[i % len(_TOPICS)]
    level = i // len(_TOPICS) + 1
    ilc = rng.random() < spec.ilc_ratio
    course = Course(
        id=tenant.new_id(),
        name=f"{topic} {level}" + (" (classroom)" if ilc else ""),
        course_type="InstructorLedCourse" if ilc else "OnlineCourse",
        date_edited=start,
        requires_approval=not ilc and rng.random() < spec.approval_ratio,
    )
    if ilc:
        course.sessions = [
            Session(tenant.new_id(), f"{course.name}, session {s + 1}", capacity=rng.randint(8, 40))
            for s in range(spec.sessions_per_ilc)
        ]
        return course
    for c in range(spec.chapters_per_course):
        chapter = Chapter(tenant.new_id(), f"Chapter {c + 1}")
        chapter.lessons = [
            Lesson(tenant.new_id(), f"Lesson {c + 1}.{n + 1}", chapter)
            for n in range(spec.lessons_per_chapter)
        ]
        course.chapters.append(chapter)
    return course


def _play_history(
    tenant: Tenant, rng: random.Random, history: _HistoryClock, ce: CourseEnrollmentRec
) -> None:
    """Move one enrollment along a plausible path, stamping each step later than the last."""

    def later() -> None:
        history.at += timedelta(minutes=rng.uniform(5, 600))

    course = ce.course
    if ce.status == Status.PendingApproval:
        if rng.random() < 0.3:
            return
        later()
        tenant.set_status(ce, Status.NotStarted)
    if course.sessions:
        later()
        _, se = tenant.enroll_session(
            ce.user, course, rng.choice(course.sessions), re_enroll=False, cancel=False
        )
        if se is not None and se.status == Status.NotStarted and rng.random() < 0.6:
            later()
            outcome = rng.choices([Status.Complete, Status.Absent, Status.Failed], [8, 1, 1])[0]
            tenant.mark_session(se, outcome, score=round(rng.uniform(60, 100), 1))
        return
    if rng.random() < 0.3:
        return
    for le in list(ce.lessons):
        if rng.random() < 0.25:
            return
        for _ in range(3):
            later()
            attempt = tenant.start_attempt(le)
            later()
            passed = rng.random() < 0.8
            status = AttemptStatus.Complete if passed else AttemptStatus.Failed
            score = round(rng.uniform(70, 100) if passed else rng.uniform(20, 69), 1)
            tenant.finish_attempt(attempt, status, score)
            if passed or ce.status == Status.Failed:
                break
        if ce.status == Status.Failed:
            return
