"""Diffing: a record Absorb sent against the snapshot the bridge kept. Pure functions.

The values here are named tuples rather than frozen dataclasses: a sweep makes
several per changed record, and a frozen dataclass costs four times as much to build.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from bridge.snapshots import Kind, Snapshot, digest, kept_date, kept_number, kept_status

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ChangeKind = Literal["created", "status_changed", "progress_changed", "removed"]


class Observation(NamedTuple):
    """One record as a sweep saw it: the raw JSON and the fields diffing reads from it."""

    kind: Kind
    id: str
    raw: dict[str, Any]
    status: int | None
    progress: float | None
    score: float | None
    is_active: bool | None
    date_edited: datetime | None
    date_completed: datetime | None
    #: The event time when the record has no `dateEdited` (chapters, attempts).
    fallback_time: datetime | None = None
    course_id: str | None = None
    #: `digest(raw)` when the caller has it already.
    raw_digest: bytes | None = None
    #: What a drill-down record belongs to (`data.parent`), known from the drill-down only.
    parent: dict[str, str] | None = None

    @property
    def time(self) -> datetime | None:
        """When the change happened, by Absorb's clock."""
        return self.date_edited or self.fallback_time

    def snapshot(self) -> Snapshot:
        """The snapshot to keep of this record, as packing keeps it (`Snapshot.kept`)."""
        return Snapshot(
            kind=self.kind,
            status=kept_status(self.status),
            progress=kept_number(self.progress),
            score=kept_number(self.score),
            is_active=self.is_active,
            date_edited=kept_date(self.date_edited),
            date_completed=kept_date(self.date_completed),
            digest=self.raw_digest or digest(self.raw),
        )


class Change(NamedTuple):
    """A change worth an event."""

    change: ChangeKind
    kind: Kind
    subject: str
    current: Observation | None
    previous: Snapshot | None
    changed: tuple[str, ...]


class Diff(NamedTuple):
    """What one record means: the events it makes and the snapshot to store (None: keep)."""

    changes: tuple[Change, ...]
    snapshot: Snapshot | None


NOTHING = Diff((), None)


def diff(
    previous: Snapshot | None,
    seen: Observation,
    *,
    emit_created: bool,
    progress_events: bool,
    horizon: datetime | None = None,
) -> Diff:
    """Compare a record with its snapshot.

    A record edited before its snapshot was taken changes nothing (it is an old
    copy, seen again through the lookback window), unless the snapshot's
    `dateEdited` lies beyond `horizon` (Absorb's "now"): a sentinel such as
    9999-12-31 orders nothing, so the record that replaces it is diffed. A record
    without a snapshot is `created` when `emit_created`, else recorded silently
    (the baseline). A `dateEdited` before 1970 (a .NET default) orders nothing either.
    """
    if previous is not None and _older(seen.date_edited, previous.date_edited, horizon):
        return NOTHING
    current = seen.snapshot()
    if previous == current:
        return NOTHING
    if previous is None:
        created = Change("created", seen.kind, seen.id, seen, None, ())
        return Diff((created,) if emit_created else (), current)
    changed = changed_fields(previous, current)
    if previous.status != current.status:
        return Diff(
            (Change("status_changed", seen.kind, seen.id, seen, previous, changed),), current
        )
    if progress_events and {"progress", "score"} & set(changed):
        return Diff(
            (Change("progress_changed", seen.kind, seen.id, seen, previous, changed),), current
        )
    return Diff((), current)


def removed(kind: Kind, subject: str, previous: Snapshot) -> Change:
    """The change for a record that is gone from Absorb."""
    return Change("removed", kind, subject, None, previous, ())


#: Tracked snapshot attributes and Absorb's names for them, in the order events list them.
_TRACKED = (
    ("status", "status"),
    ("progress", "progress"),
    ("score", "score"),
    ("is_active", "isActive"),
    ("date_edited", "dateEdited"),
    ("date_completed", "dateCompleted"),
)


#: Absorb's names of the tracked fields, in the order a Snapshot holds them (after `kind`).
_TRACKED_NAMES = tuple(name for _, name in _TRACKED)


def changed_fields(previous: Snapshot, current: Snapshot) -> tuple[str, ...]:
    """Names (Absorb's) of the tracked fields that differ between two snapshots."""
    return tuple(
        name
        for name, before, after in zip(_TRACKED_NAMES, previous[1:7], current[1:7], strict=True)
        if before != after
    )


def _older(seen: datetime | None, kept: datetime | None, horizon: datetime | None) -> bool:
    # Only real edit times order copies: not a sentinel ahead of Absorb's clock, nor a
    # .NET default such as 0001-01-01 (anything before 1970).
    if seen is None or kept is None or seen < _EPOCH:
        return False
    if horizon is not None and kept > horizon:
        return False
    return seen < kept
