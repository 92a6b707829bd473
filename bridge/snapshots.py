"""What the bridge remembers of each enrollment: a compact snapshot, packed for Redis.

A snapshot keeps only what diffing needs (status, progress, score, isActive, the
edit and completion dates) and an 8-byte hash of the whole record, in 35 bytes.
Snapshots of a scope are spread over a few Redis hashes ("buckets") small enough
that Redis keeps each in its compact listpack encoding.

Packing never fails, whatever Absorb sent: every value is first brought to what
the layout holds (`Snapshot.kept`), and diffing compares kept values only.

- progress and score: a float32 to four decimals; NaN is kept as no value, and a
  number beyond float32's range (1e39, infinity) as float32's largest of its sign;
- status: 0..253 as it is; any other number (254, 300, -1) as 254, `STATUS_OUT_OF_RANGE`;
- dates: microseconds since 1970 in UTC (a date without a zone is UTC; one that
  UTC cannot hold, such as 0001-01-01 east of it, as UTC's first or last moment);
  the epoch itself stands for "no date", so exactly 1970-01-01T00:00:00Z is kept as none.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any, NamedTuple

import orjson

from bridge.absorb.timefmt import format_rfc3339

#: Entries a bucket should hold at most: under Redis's default listpack limit of 128.
BUCKET_TARGET = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)
_NONE_STATUS = 255
#: The highest status number a snapshot keeps as it is.
STATUS_MAX = 253
#: What a snapshot keeps for any status outside 0..STATUS_MAX.
STATUS_OUT_OF_RANGE = 254
_FLOAT32 = struct.Struct("<f")
_FLOAT32_MAX = 3.4028234663852886e38
_LAYOUT = struct.Struct("<BBBffqq8s")
_DIGEST_AT = _LAYOUT.size - 8
_EDITED = struct.Struct("<q")
_EDITED_AT = struct.calcsize("<BBBff")


class Kind(IntEnum):
    """Which sort of record a snapshot is of."""

    course_enrollment = 1
    lesson_enrollment = 2
    chapter_enrollment = 3
    session_enrollment = 4
    attempt = 5


_KINDS = {k.value: k for k in Kind}
_ACTIVE, _ACTIVE_KNOWN, _HAS_PROGRESS, _HAS_SCORE = 1, 2, 4, 8


class Snapshot(NamedTuple):
    """The remembered state of one record."""

    kind: Kind
    status: int | None
    progress: float | None
    score: float | None
    is_active: bool | None
    date_edited: datetime | None
    date_completed: datetime | None
    digest: bytes

    def kept(self) -> Snapshot:
        """The snapshot as packing keeps it (the module's rules): what `unpack(pack())` gives."""
        return self._replace(
            status=kept_status(self.status),
            progress=kept_number(self.progress),
            score=kept_number(self.score),
            date_edited=kept_date(self.date_edited),
            date_completed=kept_date(self.date_completed),
        )

    def pack(self) -> bytes:
        """The snapshot as stored in Redis; never raises, whatever the values."""
        kept = self.kept()
        flags = 0
        if kept.is_active is not None:
            flags |= _ACTIVE_KNOWN | (_ACTIVE if kept.is_active else 0)
        if kept.progress is not None:
            flags |= _HAS_PROGRESS
        if kept.score is not None:
            flags |= _HAS_SCORE
        return _LAYOUT.pack(
            int(kept.kind),
            _NONE_STATUS if kept.status is None else kept.status,
            flags,
            kept.progress or 0.0,
            kept.score or 0.0,
            _micros(kept.date_edited),
            _micros(kept.date_completed),
            kept.digest,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Snapshot:
        """Read a stored snapshot back."""
        kind, status, flags, progress, score, edited, completed, digest = _LAYOUT.unpack(data)
        return cls(
            _KINDS[kind],
            None if status == _NONE_STATUS else status,
            _round(progress) if flags & _HAS_PROGRESS else None,
            _round(score) if flags & _HAS_SCORE else None,
            bool(flags & _ACTIVE) if flags & _ACTIVE_KNOWN else None,
            _from_micros(edited),
            _from_micros(completed),
            digest,
        )

    def fields(self) -> dict[str, Any]:
        """The snapshot in Absorb's field names, as events show it under `data.previous`."""
        return {
            "status": self.status,
            "progress": self.progress,
            "score": self.score,
            "isActive": self.is_active,
            "dateEdited": _iso(self.date_edited),
            "dateCompleted": _iso(self.date_completed),
        }


def digest(raw: dict[str, Any]) -> bytes:
    """An 8-byte hash of a record as Absorb sent it (keys sorted, so order does not matter)."""
    try:
        text = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:  # integers beyond 64 bits, which the standard library handles
        text = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(text, digest_size=8).digest()


def digest_of(packed: bytes) -> bytes:
    """The record hash inside a packed snapshot, without unpacking the rest."""
    return packed[_DIGEST_AT : _DIGEST_AT + 8]


def edited_us(packed: bytes) -> int:
    """The `dateEdited` inside a packed snapshot, in microseconds since the epoch (0: none)."""
    return int(_EDITED.unpack_from(packed, _EDITED_AT)[0])


def field_key(record_id: str) -> bytes:
    """The hash field a record's snapshot is stored under: 16 raw bytes for a GUID.

    Any other id is stored as its text; a text of exactly 16 bytes gets a NUL in
    front so that it can never be read back as a GUID.
    """
    if (
        len(record_id) == 36
        and record_id[8] == record_id[13] == record_id[18] == record_id[23] == "-"
        and record_id.islower()
    ):
        # The canonical lower-case GUID, nearly every id Absorb sends: skip uuid.UUID.
        try:
            raw = bytes.fromhex(record_id.replace("-", ""))
        except ValueError:
            raw = b""
        if len(raw) == 16:
            return raw
    try:
        guid = uuid.UUID(record_id)
    except ValueError:
        guid = None
    if guid is not None and str(guid) == record_id.lower():
        return guid.bytes
    text = record_id.encode()
    return b"\x00" + text if len(text) == 16 else text


def record_id(field: bytes) -> str:
    """The record id back from its hash field."""
    if len(field) == 16:
        return str(uuid.UUID(bytes=field))
    return field.removeprefix(b"\x00").decode()


def bucket_of(record_id: str, buckets: int) -> int:
    """Which of a scope's `buckets` hashes holds the record."""
    return zlib.crc32(record_id.lower().encode()) % buckets


def buckets_for(records: int) -> int:
    """How many buckets a scope of this many records should be spread over."""
    return max(1, math.ceil(records / BUCKET_TARGET))


def kept_status(value: int | None) -> int | None:
    """A status as a snapshot keeps it: 0..253 as it is, any other number as 254."""
    if value is None:
        return None
    return value if 0 <= value <= STATUS_MAX else STATUS_OUT_OF_RANGE


def kept_number(value: float | None) -> float | None:
    """Progress or score as a snapshot keeps it: float32 to four decimals, NaN as None."""
    if value is None:
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a double
        number = math.inf if value > 0 else -math.inf
    if math.isnan(number):
        return None
    number = max(-_FLOAT32_MAX, min(_FLOAT32_MAX, number))
    return _round(_FLOAT32.unpack(_FLOAT32.pack(number))[0])


def kept_date(value: datetime | None) -> datetime | None:
    """A date as a snapshot keeps it: in UTC (none given means UTC), the epoch meaning none."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # 0001-01-01 east of UTC, or 9999-12-31 west of it
        value = _FIRST if value.year == 1 else _LAST
    return None if value == _EPOCH else value


def _micros(value: datetime | None) -> int:
    if value is None:
        return 0
    return (value - _EPOCH) // timedelta(microseconds=1)


def _from_micros(value: int) -> datetime | None:
    return None if value == 0 else _EPOCH + timedelta(microseconds=value)


def _round(value: float) -> float:
    # Stored as float32: round back to what Absorb sends (two decimals at most).
    return round(value, 4)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else format_rfc3339(value)
