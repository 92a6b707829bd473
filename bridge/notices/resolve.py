"""From a notice to hints: the scopes of every feed that list what the notice names.

A course id hints that course's scope in every feed that has one. A user id
alone hints the user's own scopes (user_enrollments feeds) and, when some feed
sweeps by course, asks Absorb which of the user's enrollments were edited since
`USER_LOOKBACK_S` before the notice, and hints their courses. An enrollment id
is looked up for its course and user. Lookups use the bridge's Absorb client, so
they share its request budget; one notice is resolved at a time, so a flood of
notices takes at most one request slot beside the sweeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from bridge import metrics
from bridge.absorb.client import AbsorbClient
from bridge.absorb.filters import field
from bridge.errors import AbsorbError, BridgeError
from bridge.feeds import usable_id
from bridge.hints import Hints
from bridge.notices.counts import NoticeCounts
from bridge.notices.listener import Notice
from bridge.notices.names import Named, find_named
from bridge.redaction import excerpt

log = structlog.get_logger(__name__)

#: A user-only notice looks for that user's enrollments edited this long before it
#: arrived: room for Absorb's delay in sending and for clock skew between the two.
USER_LOOKBACK_S = 600.0
#: The most enrollments of one user a user-only notice reads.
MAX_USER_ENROLLMENTS = 200
#: How long one step waits for a notice before it counts as a completed, quiet cycle.
WAIT_S = 1.0

Target = tuple[str, str]


class Targets(Protocol):
    """Where a course or a user is swept: the feeds' scopes (the bridge answers)."""

    def scopes_for_course(self, course_id: str) -> list[Target]:
        """Every (feed, scope) listing enrollments of the course."""

    def scopes_for_user(self, user_id: str) -> list[Target]:
        """Every (feed, scope) listing the user's enrollments (user_enrollments feeds)."""

    def sweeps_by_course(self) -> bool:
        """Whether some feed's scopes are per course (a user-only notice then needs a lookup)."""


class NoticeResolver:
    """Takes notices off the listener's queue and hints the scopes they name."""

    def __init__(
        self,
        queue: asyncio.Queue[Notice],
        *,
        client: AbsorbClient,
        hints: Hints,
        targets: Targets,
        counts: NoticeCounts,
    ) -> None:
        self.queue = queue
        self.client = client
        self.hints = hints
        self.targets = targets
        self.counts = counts

    async def resolve_once(self, wait_s: float = WAIT_S) -> bool:
        """Resolve the next notice (waiting up to `wait_s`); false when none came."""
        await self.counts.flush()
        try:
            notice = await asyncio.wait_for(self.queue.get(), timeout=wait_s)
        except TimeoutError:
            return False
        try:
            await self.resolve(notice)
        finally:
            self.queue.task_done()
        await self.counts.flush()
        return True

    async def resolve(self, notice: Notice) -> list[Target]:
        """Hint every scope a notice names; returns them (none: counted as unusable)."""
        named = find_named(notice.body)
        try:
            targets = await self._targets(named, notice.received_at)
        except BridgeError as e:
            self.counts.note("failed")
            log.error("notice.lookup_failed", error=str(e)[:300], body=_shown(notice))
            return []
        for feed, scope in targets:
            added = await self.hints.add(feed, scope, at=notice.received_at)
            _count_hint(feed, added)
        if targets:
            self.counts.note("used")
            log.info("notice.used", scopes=len(targets), **_summary(named))
        else:
            self.counts.note("unusable")
            log.warning("notice.unusable", body=_shown(notice), **_summary(named))
        return targets

    async def _targets(self, named: Named, received_at: float) -> list[Target]:
        found: dict[Target, None] = {}

        def take(targets: Iterable[Target]) -> None:
            found.update(dict.fromkeys(targets))

        for course in named.courses:
            take(self.targets.scopes_for_course(course))
        for enrollment in named.enrollments:
            of_course, of_user = await self._enrollment(enrollment)
            if of_course is not None:
                take(self.targets.scopes_for_course(of_course))
            if of_user is not None:
                take(self.targets.scopes_for_user(of_user))
        for user in named.users:
            take(self.targets.scopes_for_user(user))
        user_only = named.users and not (named.courses or named.enrollments)
        if user_only and self.targets.sweeps_by_course():
            for user in named.users:
                for course in await self._edited_courses(user, received_at):
                    take(self.targets.scopes_for_course(course))
        return list(found)

    async def _enrollment(self, enrollment_id: str) -> tuple[str | None, str | None]:
        """The course and user of an enrollment; (None, None) when Absorb does not know it."""
        try:
            record = await self.client.get_course_enrollment(enrollment_id)
        except AbsorbError as e:
            if e.status == 404:
                log.warning("notice.unknown_enrollment", enrollment=enrollment_id)
                return None, None
            raise
        return usable_id(record.course_id), usable_id(record.user_id)

    async def _edited_courses(self, user_id: str, received_at: float) -> list[str]:
        """The courses of a user's enrollments edited since a little before the notice."""
        since = datetime.fromtimestamp(received_at, UTC) - timedelta(seconds=USER_LOOKBACK_S)
        courses: dict[str, None] = {}
        seen = 0
        listing = self.client.list_user_course_enrollments(
            user_id, filter=str(field("dateEdited").ge(since))
        )
        async for record in listing:
            course = usable_id(record.course_id)
            if course is not None:
                courses[course] = None
            seen += 1
            if seen >= MAX_USER_ENROLLMENTS:
                break
        return list(courses)


def _count_hint(feed: str, added: bool) -> None:
    metrics.NOTICE_HINTS.labels(feed, "added" if added else "coalesced").inc()


def _summary(named: Named) -> dict[str, int]:
    return {
        "courses": len(named.courses),
        "users": len(named.users),
        "enrollments": len(named.enrollments),
    }


def _shown(notice: Notice) -> str:
    """A short excerpt of a notice's body for the log (ids only; secrets never reach here)."""
    return excerpt(json.dumps(notice.body, default=str)[:200], [], limit=120)
