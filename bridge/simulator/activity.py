"""Live learner activity: learners enroll, attempt lessons, pass, fail, get approved, re-enroll."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import structlog

from bridge.absorb.models import AttemptStatus, Status
from bridge.simulator.records import CourseEnrollmentRec
from bridge.simulator.tenant import Tenant

log = structlog.get_logger(__name__)

_TRIES = 20


class Activity:
    """Moves learners along realistic paths, one `step()` at a time or at a steady rate."""

    def __init__(self, tenant: Tenant, rng: random.Random) -> None:
        self.tenant = tenant
        self.rng = rng
        self.per_second = 0.0
        self.steps = 0
        self._ids: list[str] = []
        self._actions: list[tuple[Callable[[], bool], int]] = [
            (self._attempt, 50),
            (self._enroll, 12),
            (self._attend_session, 10),
            (self._approve, 6),
            (self._re_enroll, 4),
            (self._admin_status, 2),
            (self._unenroll, 1),
        ]

    def step(self) -> None:
        """Do one thing a learner or admin would do (some draws find nothing to do)."""
        self.steps += 1
        if self.steps % 500 == 1 or not self._ids:
            self._ids = list(self.tenant.enrollments)
        actions, weights = zip(*self._actions, strict=True)
        for action in self.rng.choices(actions, weights, k=3):
            if action():
                return

    async def run(self) -> None:
        """Step at `per_second` (changeable while running) until cancelled."""
        tick_s = 0.05
        owed = 0.0
        while True:
            await asyncio.sleep(tick_s)
            owed += self.per_second * tick_s
            while owed >= 1.0:
                owed -= 1.0
                try:
                    self.step()
                except Exception:  # a bug in one step must not end the simulated activity
                    log.exception("sim.activity_step_failed")

    def _pick(self, accept: Callable[[CourseEnrollmentRec], bool]) -> CourseEnrollmentRec | None:
        if not self._ids:
            return None
        for _ in range(_TRIES):
            ce = self.tenant.enrollments.get(self.rng.choice(self._ids))
            if ce is not None and ce.is_active and accept(ce):
                return ce
        return None

    def _attempt(self) -> bool:
        ce = self._pick(
            lambda e: (
                e.status in (Status.NotStarted, Status.InProgress)
                and any(x.status != Status.Complete for x in e.lessons)
            )
        )
        if ce is None:
            return False
        le = next(x for x in ce.lessons if x.status != Status.Complete)
        open_attempt = next(
            (a for a in le.attempt_list if a.status == AttemptStatus.InProgress), None
        )
        if open_attempt is None:
            self.tenant.start_attempt(le)
            return True
        passed = self.rng.random() < 0.75
        score = round(self.rng.uniform(70, 100) if passed else self.rng.uniform(10, 69), 1)
        status = AttemptStatus.Complete if passed else AttemptStatus.Failed
        self.tenant.finish_attempt(open_attempt, status, score)
        return True

    def _enroll(self) -> bool:
        user = self.rng.choice(list(self.tenant.users.values()))
        course = self.rng.choice(list(self.tenant.courses.values()))
        if (user.id, course.id) in self.tenant.active:
            return False
        if course.sessions:
            session = self.rng.choice(course.sessions)
            self.tenant.enroll_session(user, course, session, re_enroll=False, cancel=False)
        else:
            self.tenant.enroll(user, course)
        self._ids.append(self.tenant.active[(user.id, course.id)].id)
        return True

    def _attend_session(self) -> bool:
        ce = self._pick(lambda e: any(s.status == Status.NotStarted for s in e.sessions))
        if ce is None:
            return False
        se = next(s for s in ce.sessions if s.status == Status.NotStarted)
        outcome = self.rng.choices([Status.Complete, Status.Absent, Status.Failed], [8, 1, 1])[0]
        self.tenant.mark_session(se, outcome, score=round(self.rng.uniform(50, 100), 1))
        return True

    def _approve(self) -> bool:
        ce = self._pick(lambda e: e.status == Status.PendingApproval)
        if ce is None:
            return False
        decision = Status.NotStarted if self.rng.random() < 0.85 else Status.Declined
        self.tenant.set_status(ce, decision)
        return True

    def _re_enroll(self) -> bool:
        ce = self._pick(lambda e: e.status in (Status.Complete, Status.Failed, Status.NotComplete))
        if ce is None:
            return False
        fresh = self.tenant.enroll(ce.user, ce.course, re_enroll=True)
        self._ids.append(fresh.id)
        return True

    def _admin_status(self) -> bool:
        ce = self._pick(lambda e: e.status in (Status.InProgress, Status.NotStarted))
        if ce is None:
            return False
        self.tenant.set_status(ce, self.rng.choice([Status.NotComplete, Status.Complete]))
        return True

    def _unenroll(self) -> bool:
        ce = self._pick(lambda e: e.status == Status.NotStarted)
        if ce is None:
            return False
        self.tenant.unenroll(ce)
        return True
