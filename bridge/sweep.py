"""Sweeping one scope: read what changed since the watermark, diff it, commit it page by page.

Absorb's lists shift under a reader: a record edited while a client pages moves
to the end of a `dateEdited` sort, and offset paging then skips whatever slid
into the pages already read. So a sweep does not page by offset. It asks for
`dateEdited ge T` sorted by `dateEdited,id` from the first page every time, and
moves T to the newest `dateEdited` it has committed, skipping the records it
has already handled at exactly T. Only when a whole page shares one timestamp
does it step through that group by offset, and then it reads the group again
until a pass finds nothing new, so an edit during the walk cannot hide a record.

Records Absorb should not send are handled one by one, never by failing a page:
a `dateEdited` ahead of Absorb's clock (a 9999-12-31 sentinel) moves the watermark
no further than Absorb's "now" plus the lookback, and one before 1970 not at all; of
two copies of one id in a page the later wins; a record that cannot be read goes
to quarantine, and a full sweep counts it as present; a drill-down that fails is
kept in quarantine as pending and tried again on the scope's next sweeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zlib import crc32

import structlog

from bridge import clock, drill_downs, keys, metrics
from bridge.absorb.client import AbsorbClient, RawPage
from bridge.absorb.filters import Filter
from bridge.absorb.filters import field as f
from bridge.absorb.models import Status, parse_timestamp
from bridge.absorb.paths import Op
from bridge.absorb.timefmt import format_datetime, format_rfc3339
from bridge.diff import Change, Diff, Observation, diff, removed
from bridge.drill_downs import DrillDown
from bridge.errors import (
    AbsorbRequestError,
    AbsorbResponseError,
    AbsorbUnavailableError,
)
from bridge.events import cloud_event, encode
from bridge.feeds import Scope, Unreadable, observe, usable_id
from bridge.snapshots import (
    Kind,
    Snapshot,
    bucket_of,
    buckets_for,
    digest,
    digest_of,
    edited_us,
    field_key,
    record_id,
)
from bridge.store import Commit, Conflict, OutboxEvent, SnapshotWrite, Store

log = structlog.get_logger(__name__)

_SORT = "dateEdited,id"
_CONFLICT_RETRIES = 5
#: How long a failed sweep waits for the commit of the page before the failure.
_ABANDON_WAIT_S = 10.0
#: Snapshot buckets read per round trip when looking for removed records.
_SCAN_BUCKETS = 100
#: Drill-down records of a course scope get this many buckets per bucket of enrollments.
_DETAIL_BUCKETS = 4
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TICK = timedelta(microseconds=1)
_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)
#: What makes a drill-down pending rather than failing its scope's sweep.
_DRILL_FAILURES = (
    AbsorbRequestError,
    AbsorbResponseError,
    AbsorbUnavailableError,
    Unreadable,
    UnicodeError,
)
_KNOWN_STATUSES = frozenset(int(s) for s in Status)
#: A `dateEdited` this far ahead of Absorb's clock is a sentinel worth a warning, not skew.
_SENTINEL_US = 60_000_000


@dataclass
class SweepResult:
    """What one sweep of a scope did."""

    pages: int = 0
    records: int = 0
    changed: int = 0
    events: int = 0
    quarantined: int = 0
    removed: int = 0
    watermark: datetime | None = None
    full: bool = False
    #: Events emitted, by type.
    types: dict[str, int] = field(default_factory=dict)


@dataclass
class _Batch:
    """Where a committed batch stands: its newest `dateEdited` and the records edited then."""

    newest: datetime | None
    at_newest: set[str]


@dataclass
class _Cursor:
    """Where the sweep stands: the lower bound and what it has handled at exactly that time."""

    lower: datetime | None
    offset: int = 0
    at_lower: set[str] = field(default_factory=set)
    #: Offset walks through one timestamp that still need a verifying pass.
    group: datetime | None = None


def to_us(value: datetime) -> int:
    """Microseconds since the epoch (how watermarks are stored)."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def from_us(value: int) -> datetime:
    """A watermark back as a datetime."""
    return _EPOCH + timedelta(microseconds=value)


class Sweeper:
    """Sweeps scopes for one tenant; the daemon, `resync` and tests all call `sweep()`."""

    def __init__(
        self,
        client: AbsorbClient,
        store: Store,
        *,
        source: str,
        page_size: int | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.source = source
        self.page_size = page_size or client.page_size

    async def sweep(self, scope: Scope, token: str, *, full: bool = False) -> SweepResult:
        """Sweep `scope` while holding lease `token`; `full` re-reads everything and finds removals.

        Every page is committed atomically with the watermark, so a sweep that fails
        part-way resumes where its last page left off.
        """
        run = _Run(self, scope, token, full=full)
        return await run.go()


class _Run:
    """The state of one sweep of one scope."""

    def __init__(self, sweeper: Sweeper, scope: Scope, token: str, *, full: bool) -> None:
        self.s = sweeper
        self.store = sweeper.store
        self.scope = scope
        self.feed = scope.feed
        self.token = token
        self.full = full
        self.result = SweepResult(full=full)
        self.seen: set[str] = set()
        self.buckets = 0
        self.baseline_done = False
        self.quarantine_keys: set[str] = set()
        #: Drill-downs that failed before and wait for another try, by enrollment id.
        self.drill_downs: dict[str, DrillDown] = {}
        #: Enrollments drilled into during this sweep.
        self.drilled: set[str] = set()
        #: Records a full sweep met without a usable id (it then reports no removal).
        self.unplaced = 0
        self.horizon_us = 0
        self._pending: asyncio.Future[None] | None = None
        prefix, feed, scope_key = self.store.prefix, self.feed.name, scope.key
        self._buckets = keys.snapshot_buckets(prefix, feed, scope_key)
        self._detail_buckets = keys.snapshot_buckets(prefix, feed, scope_key, details=True)

    async def go(self) -> SweepResult:
        state = await self.store.scope_state(self.feed.name, self.scope.key)
        self.buckets = int(state.get("buckets", "0"))
        self.baseline_done = state.get("baseline") == "done"
        watermark = int(state.get("watermark", "0"))
        prefix = f"{self.scope.key}|"
        quarantined = await self.store.quarantined(self.feed.name)
        self.quarantine_keys = {k for k in quarantined if k.startswith(prefix)}
        self.drill_downs = drill_downs.pending(quarantined, self.scope.key)
        self._move_horizon()
        lower = None
        if watermark and not self.full:
            # A watermark stored ahead of Absorb's clock would hide every later change.
            lower_us = min(watermark, self.horizon_us) - int(self.feed.lookback_s * 1_000_000)
            lower = from_us(lower_us) if lower_us > 0 else None
        try:
            await self._walk(_Cursor(lower))
            await self._settle()
            await self._retry_drill_downs()
        except asyncio.CancelledError:
            await self._abandon(wait=False)
            raise
        except BaseException:
            await self._abandon(wait=True)
            raise
        if self.full:
            await self._find_removed()
        finished = {"baseline": "done", "swept_at": format_rfc3339(clock.now())}
        if self.full:
            finished["reconciled_at"] = finished["swept_at"]
        await self.store.set_scope_state(self.feed.name, self.scope.key, finished)
        return self.result

    # -- paging -----------------------------------------------------------------------------

    async def _walk(self, cursor: _Cursor) -> None:
        while True:
            page = await self._page(cursor)
            fresh = [r for r in page.items if not self._handled(r, cursor)]
            # While a same-timestamp group awaits its verifying pass, the watermark stays
            # at the group: a crash before the pass must read the group again.
            batch = await self._process(fresh, page, cap=cursor.group)
            newest = batch.newest
            short = len(page.items) < self.s.page_size
            if newest is not None and (cursor.lower is None or newest > cursor.lower):
                if cursor.group is not None:
                    await self._verify_group(cursor)
                cursor.at_lower = batch.at_newest
                cursor.lower, cursor.offset = newest, 0
            elif not short:
                # The whole page sits at one timestamp (or cannot be placed): step deeper.
                cursor.group = cursor.group or cursor.lower
                cursor.at_lower |= {i for r in page.items if (i := _rid(r)) is not None}
                cursor.offset += 1
            if short:
                if cursor.group is not None:
                    await self._verify_group(cursor)
                return

    async def _verify_group(self, cursor: _Cursor) -> None:
        """Read a same-timestamp group again until a pass finds nothing it had not handled."""
        group = cursor.group
        cursor.group = None
        if group is None:
            return
        while True:
            found = False
            offset = 0
            while True:
                # A range, not `eq`: Absorb keeps ticks (100 ns), the bridge microseconds.
                at_group = f("dateEdited").ge(group)
                if group < _LAST:  # a group at 9999-12-31T23:59:59.999999 has no end to state
                    at_group &= f("dateEdited").lt(group + _TICK)
                page = await self._request(at_group, offset)
                fresh = [r for r in page.items if _rid(r) not in cursor.at_lower]
                if fresh:
                    found = True
                    await self._process(fresh, page)
                    cursor.at_lower |= {i for r in fresh if (i := _rid(r)) is not None}
                if len(page.items) < self.s.page_size:
                    break
                offset += 1
            if not found:
                return

    def _move_horizon(self) -> None:
        """How far a watermark may go: Absorb's "now" (else the bridge's) plus the lookback.

        Within that, the next sweep, which reads from the watermark less the lookback,
        still starts no later than Absorb's time of this one.
        """
        now = self.s.client.transport.absorb_now or clock.now()
        self.horizon_us = to_us(now) + int(self.feed.lookback_s * 1_000_000)

    async def _page(self, cursor: _Cursor) -> RawPage:
        condition = None if cursor.lower is None else f("dateEdited").ge(cursor.lower)
        return await self._request(condition, cursor.offset)

    async def _request(self, condition: Filter | None, offset: int) -> RawPage:
        params = {"_filter": None if condition is None else str(condition), "_sort": _SORT}
        pages = self.s.client.pages(
            self.scope.op,
            self.scope.items_key,
            self.scope.ids,
            params,
            page_size=self.s.page_size,
            first_page=offset,
        )
        try:
            page = await anext(pages)
        finally:
            await pages.aclose()
        self.result.pages += 1
        self._move_horizon()
        if not self.buckets:
            self.buckets = buckets_for(page.total_items)
        return page

    def _handled(self, raw: object, cursor: _Cursor) -> bool:
        rid = _rid(raw)
        if rid is None:
            return False
        return rid in cursor.at_lower and (cursor.lower is None or _edited(raw) == cursor.lower)

    # -- one batch: observe, diff, drill down, commit ------------------------------------------

    async def _process(
        self, batch: list[object], page: RawPage, *, cap: datetime | None = None
    ) -> _Batch:
        """Diff a batch and start its commit; returns where its newest readable records stand.

        The commit runs while the caller fetches and diffs the next page: the next
        batch's commit waits for it, so commits land in page order, and a snapshot
        read before the commit landed fails that later commit's compare-and-set and
        is read and diffed again. Records identical to their snapshot (the hash of
        the raw record matches the one kept) skip validation and diffing: on most
        sweeps that is nearly all of them.
        """
        quarantine: dict[str, str] = {}
        batch = self._later_copies(batch)
        ids = [_rid(raw) for raw in batch]
        stored = await self._snapshots_of_ids(ids)
        edited: dict[str, int] = {}
        changed: list[tuple[object, bytes | None]] = []
        for raw, rid in zip(batch, ids, strict=True):
            packed = stored.get(rid) if rid is not None else None
            hashed = digest(raw) if isinstance(raw, dict) else None
            if rid is not None and packed and hashed is not None and digest_of(packed) == hashed:
                edited[rid] = edited_us(packed)
            else:
                changed.append((raw, hashed))
        if self.quarantine_keys:
            for rid in edited:
                self._clear_quarantine(rid, quarantine)
        seen = self._observe_all(self.scope.kind, changed, quarantine)
        for obs in seen:
            edited[obs.id] = to_us(obs.date_edited) if obs.date_edited is not None else 0
        if self.full:  # only a full sweep looks for what it did not see
            # Present but unreadable is still present: never report it removed.
            self.seen.update(rid for rid in ids if rid is not None)
            self.unplaced += ids.count(None)
        self.result.records += len(batch)
        # A date before 1970 places nothing (it is a default, not an edit).
        newest_us = max((us for us in edited.values() if us > 0), default=0)
        newest = from_us(newest_us) if newest_us else None
        at_newest = {rid for rid, us in edited.items() if us == newest_us and us}
        if newest is not None and len(edited) < len(batch):
            # An unreadable record at the newest time is handled too (it is in quarantine).
            at_newest |= {i for r in batch if (i := _rid(r)) is not None and _edited(r) == newest}
        watermark_us = min(newest_us, to_us(cap)) if cap is not None and newest_us else newest_us
        if watermark_us > self.horizon_us + _SENTINEL_US:
            log.warning(
                "sweep.future_date_edited",
                feed=self.feed.name,
                scope=self.scope.key,
                date_edited=format_rfc3339(from_us(watermark_us)),
                watermark=format_rfc3339(from_us(self.horizon_us)),
            )
        watermark_us = min(watermark_us, self.horizon_us)
        commit = self._new_commit(quarantine, watermark_us)
        await self._diff_into(commit, seen, {o.id: stored.get(o.id) for o in seen})
        await self._settle()
        self._pending = asyncio.ensure_future(self._apply(commit, seen, quarantine, watermark_us))
        return _Batch(newest, at_newest)

    def _later_copies(self, batch: list[object]) -> list[object]:
        """The batch with one record per id: of two copies in one page, the later wins.

        Absorb sorts by `dateEdited,id`, so the later copy is the newer edit; diffing
        both would write one snapshot twice in one commit.
        """
        last = {rid: n for n, raw in enumerate(batch) if (rid := _rid(raw)) is not None}
        if len(last) == sum(1 for raw in batch if _rid(raw) is not None):
            return batch
        kept = [raw for n, raw in enumerate(batch) if (rid := _rid(raw)) is None or last[rid] == n]
        log.warning(
            "sweep.duplicate_ids",
            feed=self.feed.name,
            scope=self.scope.key,
            dropped=len(batch) - len(kept),
        )
        return kept

    def _new_commit(self, quarantine: dict[str, str], watermark_us: int) -> Commit:
        commit = Commit(quarantine=dict(quarantine), state={"buckets": str(self.buckets)})
        if watermark_us:
            commit.watermark_us = watermark_us
        return commit

    async def _apply(
        self,
        commit: Commit,
        seen: list[Observation],
        quarantine: dict[str, str],
        watermark_us: int,
    ) -> None:
        """Commit a batch; on a conflict read its snapshots again and diff it again."""
        for _ in range(_CONFLICT_RETRIES):
            try:
                await self.store.commit(self.feed.name, self.scope.key, self.token, commit)
            except Conflict:
                commit = self._new_commit(quarantine, watermark_us)
                await self._diff_into(commit, seen)
                continue
            self.result.quarantined += sum(1 for v in commit.quarantine.values() if v)
            self.result.events += len(commit.events)
            for event in commit.events:
                self.result.types[event.type] = self.result.types.get(event.type, 0) + 1
            if watermark_us:
                newest = from_us(watermark_us)
                self.result.watermark = max(newest, self.result.watermark or newest)
            return
        raise Conflict(f"{self.scope}: snapshots kept changing under the sweep")

    async def _settle(self) -> None:
        """Wait for the commit in flight, if any (raising what it raised)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending

    async def _abandon(self, *, wait: bool) -> None:
        """After a failure: let the commit in flight land (`wait`), else stop waiting for it.

        A commit lands whole or not at all, so one that is given up may still land.
        """
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if wait:
            try:
                await asyncio.wait_for(asyncio.shield(pending), _ABANDON_WAIT_S)
                return
            except Exception as e:  # its own failure, or it took too long
                log.warning(
                    "sweep.commit_failed", feed=self.feed.name, scope=self.scope.key, error=str(e)
                )
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)

    def _observe_all(
        self,
        kind: Kind,
        raws: Iterable[tuple[Any, bytes | None]],
        quarantine: dict[str, str],
        parent: DrillDown | None = None,
        belongs_to: dict[str, str] | None = None,
    ) -> list[Observation]:
        """Read raw records (each with its digest, if known); the unreadable go to `quarantine`.

        `belongs_to` is what drill-down records belong to (their events' `data.parent`).
        """
        seen: list[Observation] = []
        course = parent.course_id if parent else self.scope.course_id
        when = parent.time if parent else None
        for raw, hashed in raws:
            try:
                seen.append(
                    observe(
                        kind,
                        raw,
                        course_id=course,
                        fallback_time=when,
                        raw_digest=hashed,
                        parent=belongs_to,
                    )
                )
            except Unreadable as e:
                qkey = f"{self.scope.key}|{e.record_id or _fingerprint(raw)}"
                quarantine[qkey] = _quarantine_entry(raw, str(e), self.scope, kind)
                metrics.QUARANTINED_RECORDS.labels(self.feed.name, e.category).inc()
                log.warning(
                    "sweep.quarantined",
                    feed=self.feed.name,
                    scope=self.scope.key,
                    kind=kind.name,
                    record=e.record_id,
                    error=str(e),
                )
        for obs in seen:
            self._clear_quarantine(obs.id, quarantine)
            if obs.status is not None and obs.status not in _KNOWN_STATUSES:
                metrics.UNKNOWN_STATUSES.labels(self.feed.name, str(obs.status)).inc()
        return seen

    def _clear_quarantine(self, rid: str, quarantine: dict[str, str]) -> None:
        qkey = f"{self.scope.key}|{rid}"
        if qkey in self.quarantine_keys:
            quarantine[qkey] = ""
            self.quarantine_keys.discard(qkey)

    async def _snapshots_of_ids(self, ids: list[str | None]) -> dict[str, bytes | None]:
        """The stored snapshots of the records of a page, by id (one script call)."""
        known = [rid for rid in ids if rid is not None]
        count = self.buckets
        # bucket_of() inlined: ids from _rid() are lower case already, and this runs per record.
        wanted = [(crc32(rid.encode()) % count, field_key(rid)) for rid in known]
        values = await self.store.read_snapshots(self._bucket_prefix(False), wanted)
        return dict(zip(known, values, strict=True))

    async def _diff_into(
        self,
        commit: Commit,
        seen: list[Observation],
        stored: dict[str, bytes | None] | None = None,
    ) -> None:
        emit_created = self.baseline_done or self.feed.emit_on_first_sync
        if stored is None:
            stored = await self._snapshots(seen, details=False)
        for obs in seen:
            previous = stored[obs.id]
            before = _unpack(previous)
            outcome = diff(
                before,
                obs,
                emit_created=emit_created,
                progress_events=self.feed.progress_events,
                horizon=from_us(self.horizon_us),
            )
            self._add(commit, obs, previous, outcome, details=False)
            if outcome.snapshot is not None and obs.kind == Kind.course_enrollment:
                self.result.changed += 1
                task = self._drill_down_of(obs, before)
                if task is not None and self.feed.details and self.baseline_done:
                    await self._drill_down(commit, task)

    def _add(
        self,
        commit: Commit,
        obs: Observation,
        previous: bytes | None,
        outcome: Diff,
        *,
        details: bool,
    ) -> None:
        if outcome.snapshot is None:
            return
        commit.snapshots.append(
            SnapshotWrite(
                self._bucket_key(obs.id, details),
                field_key(obs.id),
                previous or b"",
                outcome.snapshot.pack(),
            )
        )
        commit.events.extend(self._event(change) for change in outcome.changes)

    def _event(self, change: Change) -> OutboxEvent:
        event = cloud_event(self.s.source, change)
        course = (change.current.course_id if change.current else None) or self.scope.course_id
        return OutboxEvent(
            id=event["id"],
            subject=change.subject,
            type=event["type"],
            feed=self.feed.name,
            course_id=course or "",
            json=encode(event),
        )

    async def _snapshots(
        self, seen: Iterable[Observation], *, details: bool
    ) -> dict[str, bytes | None]:
        count = self.buckets * (_DETAIL_BUCKETS if details else 1)
        ids = [o.id for o in seen]
        wanted = [(bucket_of(rid, count), field_key(rid)) for rid in ids]
        values = await self.store.read_snapshots(self._bucket_prefix(details), wanted)
        return dict(zip(ids, values, strict=True))

    def _bucket_prefix(self, details: bool) -> str:
        return self._detail_buckets if details else self._buckets

    def _bucket_key(self, rid: str, details: bool) -> str:
        count = self.buckets * (_DETAIL_BUCKETS if details else 1)
        return f"{self._bucket_prefix(details)}{bucket_of(rid, count)}"

    # -- drill-down -----------------------------------------------------------------------------

    def _drill_down_of(self, parent: Observation, before: Snapshot | None) -> DrillDown | None:
        """What drilling into a changed enrollment needs; None when it names no user or course.

        A drill-down still pending from an earlier sweep keeps its older `since`, so
        details changed since that earlier edit are still announced.
        """
        user, course = parent.raw.get("userId"), parent.course_id
        # As Absorb spelled them (they go into its paths), once they are usable at all.
        if not (isinstance(user, str) and course and usable_id(user) and usable_id(course)):
            return None
        pending = self.drill_downs.get(parent.id)
        since = pending.since if pending is not None else (before.date_edited if before else None)
        return DrillDown(parent.id, user, course, since, parent.date_edited)

    async def _drill_down(self, commit: Commit, task: DrillDown) -> None:
        """Drill into one enrollment; if Absorb's replies fail, mark it pending instead.

        A drill-down lands whole or not at all: a failed one writes nothing but its
        pending mark (in quarantine, with the error), and the enrollment's own change
        is committed as usual.
        """
        qkey = drill_downs.quarantine_key(self.scope.key, task.parent_id)
        self.drilled.add(task.parent_id)
        part = Commit()
        try:
            await self._drill_into(part, task)
        except _DRILL_FAILURES as e:
            commit.quarantine[qkey] = drill_downs.entry(task, str(e), self.scope.key)
            self.quarantine_keys.add(qkey)
            metrics.QUARANTINED_RECORDS.labels(self.feed.name, "drill_down").inc()
            log.warning(
                "sweep.drill_down_pending",
                feed=self.feed.name,
                scope=self.scope.key,
                record=task.parent_id,
                error=str(e),
            )
            return
        commit.snapshots += part.snapshots
        commit.events += part.events
        commit.quarantine.update(part.quarantine)
        self.drill_downs.pop(task.parent_id, None)
        if qkey in self.quarantine_keys:
            commit.quarantine[qkey] = ""
            self.quarantine_keys.discard(qkey)

    async def _retry_drill_downs(self) -> None:
        """Try again every drill-down of the scope still pending after this sweep's pages."""
        if not (self.feed.details and self.baseline_done):
            return
        for task in list(self.drill_downs.values()):
            if task.parent_id in self.drilled:
                continue  # tried in this sweep already, as its enrollment changed again
            commit = Commit()
            await self._drill_down(commit, task)
            await self.store.commit(self.feed.name, self.scope.key, self.token, commit)
            self.result.events += len(commit.events)
            for event in commit.events:
                self.result.types[event.type] = self.result.types.get(event.type, 0) + 1

    async def _drill_into(self, commit: Commit, task: DrillDown) -> None:
        """Fetch and diff the lessons, chapters and attempts of a course enrollment that changed."""
        ids = {"user_id": task.user_id, "course_id": task.course_id}
        since = task.since
        found: list[Observation] = []
        belongs_to = drill_downs.parent_of(task)
        if "lessons" in self.feed.details or "attempts" in self.feed.details:
            # modifiedSince is exclusive on some tenants: ask from just before the last edit.
            before = since - _TICK if since is not None and since > _FIRST else None
            params = {"modifiedSince": format_datetime(before) if before else None}
            raws = await self._raw_list(Op.LIST_USER_LESSON_ENROLLMENTS, ids, params)
            found += self._observe_all(
                Kind.lesson_enrollment, _unhashed(raws), commit.quarantine, task, belongs_to
            )
        if "chapters" in self.feed.details:
            raws = await self._raw_list(Op.LIST_CHAPTER_ENROLLMENTS, ids, {})
            found += self._observe_all(
                Kind.chapter_enrollment, _unhashed(raws), commit.quarantine, task, belongs_to
            )
        stored = await self._snapshots(found, details=True)
        attempts_of: list[Observation] = []
        for obs in found:
            outcome = self._diff_detail(obs, stored[obs.id], since)
            self._add(commit, obs, stored[obs.id], outcome, details=True)
            if (
                "attempts" in self.feed.details
                and obs.kind == Kind.lesson_enrollment
                and outcome.snapshot is not None
                and obs.raw.get("attempts")
            ):
                attempts_of.append(obs)
        await self._attempts(commit, task, attempts_of)

    async def _attempts(self, commit: Commit, task: DrillDown, lessons: list[Observation]) -> None:
        found: list[Observation] = []
        for lesson in lessons:
            lesson_id = usable_id(lesson.raw.get("lessonId"))
            if lesson_id is None:
                continue
            ids = {"user_id": task.user_id, "course_id": task.course_id, "lesson_id": lesson_id}
            raws = await self._raw_list(Op.LIST_LESSON_ATTEMPTS, ids, {})
            # Absorb's attempt records name no learner, lesson or course: the drill-down does.
            belongs_to = drill_downs.parent_of(task, lesson)
            found += self._observe_all(
                Kind.attempt, _unhashed(raws), commit.quarantine, task, belongs_to
            )
        stored = await self._snapshots(found, details=True)
        for obs in found:
            outcome = self._diff_detail(obs, stored[obs.id], task.since)
            self._add(commit, obs, stored[obs.id], outcome, details=True)

    async def _raw_list(
        self, op: Op, ids: dict[str, str], params: dict[str, str | None]
    ) -> list[Any]:
        data = await self.s.client.transport.request(op, ids=ids, params=params)
        if not isinstance(data, list):
            shown = "an empty body" if data is None else f"a JSON {type(data).__name__}"
            raise Unreadable(f"{op.route}: expected a JSON array, got {shown}", None)
        return data

    def _diff_detail(self, obs: Observation, stored: bytes | None, since: datetime | None) -> Diff:
        # A lesson the bridge never saw, last touched before the parent's previous edit,
        # is history: record it silently rather than announce it as new.
        fresh = since is None or (obs.time is not None and obs.time > since)
        return diff(
            _unpack(stored),
            obs,
            emit_created=fresh,
            progress_events=self.feed.progress_events,
            horizon=from_us(self.horizon_us),
        )

    # -- reconciliation -------------------------------------------------------------------------

    async def _find_removed(self) -> None:
        """After a full sweep: snapshots of records the sweep did not see are `removed`.

        A record without a usable id may be any of them, so when the sweep met one it
        reports no removal this time rather than a false one.
        """
        if self.unplaced:
            log.warning(
                "sweep.removals_not_reported",
                feed=self.feed.name,
                scope=self.scope.key,
                records_without_id=self.unplaced,
            )
            return
        kind = int(self.scope.kind)
        for first in range(0, self.buckets, _SCAN_BUCKETS):
            numbers = range(first, min(self.buckets, first + _SCAN_BUCKETS))
            bucket_keys = [f"{self._buckets}{n}" for n in numbers]
            for key, bucket in zip(
                bucket_keys, await self.store.scan_buckets(bucket_keys), strict=True
            ):
                # The kind is a snapshot's first byte: unpack only what is gone.
                gone = [
                    (rid, value, Snapshot.unpack(value))
                    for fld, value in bucket.items()
                    if value[0] == kind and (rid := record_id(fld)) not in self.seen
                ]
                if gone:
                    await self._commit_removed(key, gone)

    async def _commit_removed(self, key: str, gone: list[tuple[str, bytes, Snapshot]]) -> None:
        commit = Commit()
        for rid, value, snap in gone:
            commit.snapshots.append(SnapshotWrite(key, field_key(rid), value, b""))
            commit.events.append(self._event(removed(snap.kind, rid, snap)))
            pending = drill_downs.quarantine_key(self.scope.key, rid)
            if pending in self.quarantine_keys:
                commit.quarantine[pending] = ""
        await self.store.commit(self.feed.name, self.scope.key, self.token, commit)
        self.result.removed += len(gone)
        self.result.events += len(gone)
        for event in commit.events:
            self.result.types[event.type] = self.result.types.get(event.type, 0) + 1


def _unhashed(raws: list[Any]) -> list[tuple[Any, bytes | None]]:
    return [(raw, None) for raw in raws]


def _unpack(value: bytes | None) -> Snapshot | None:
    return None if value is None else Snapshot.unpack(value)


def _rid(raw: object) -> str | None:
    return usable_id(raw.get("id")) if isinstance(raw, dict) else None


def _edited(raw: object) -> datetime | None:
    value = raw.get("dateEdited") if isinstance(raw, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)  # as validation reads it, so the two always agree
    except ValueError:
        return None


def _fingerprint(raw: object) -> str:
    return hashlib.sha256(repr(raw).encode()).hexdigest()[:16]


def _quarantine_entry(raw: object, error: str, scope: Scope, kind: Kind) -> str:
    # json, not orjson: it writes lone surrogates, NaN and huge integers back as they came.
    return json.dumps(
        {
            "scope": scope.key,
            "kind": kind.name,
            "raw": json.dumps(raw, default=str),
            "error": error,
            "at": format_rfc3339(clock.now()),
        }
    )
