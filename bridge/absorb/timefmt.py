"""Absorb's time formats: .NET-style timestamps and TimeSpan strings."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,7}))?)?"
    r"(Z|z|[+-]\d{2}:?\d{2})?$"
)
_TIMESPAN = re.compile(r"^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")


def parse_datetime(text: str) -> datetime:
    """Parse an Absorb timestamp into an aware UTC datetime.

    Accepts up to seven fractional digits (.NET ticks; the seventh is dropped,
    Python keeps microseconds) and a missing zone, which Absorb means as UTC.
    """
    m = _DATETIME.match(text.strip())
    if m is None:
        raise ValueError(f"not an ISO 8601 timestamp: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    value = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro, UTC
    )
    if zone and zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        value -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return value


def format_datetime(value: datetime, *, zulu: bool = True) -> str:
    """Render a datetime as Absorb does: UTC, seven fractional digits, `Z` unless `zulu=False`."""
    value = value.astimezone(UTC) if value.tzinfo else value
    text = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}0"
    )
    return text + "Z" if zulu else text


def format_rfc3339(value: datetime) -> str:
    """RFC 3339 UTC with only as many fractional digits as the value needs."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # isoformat() is C: "YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00", fraction only when nonzero.
    text = value.isoformat()[:-6]
    return (text.rstrip("0") if value.microsecond else text) + "Z"


def parse_timespan(text: str) -> timedelta:
    """Parse a .NET TimeSpan string `[-][d.]hh:mm:ss[.fffffff]`."""
    m = _TIMESPAN.match(text.strip())
    if m is None:
        raise ValueError(f"not a TimeSpan ([d.]hh:mm:ss[.fffffff]): {text!r}")
    negative, days, hours, minutes, seconds, fraction = m.groups()
    if int(minutes) > 59 or int(seconds) > 59 or int(hours) > 23:
        raise ValueError(f"TimeSpan field out of range: {text!r}")
    span = timedelta(
        days=int(days or 0),
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds),
        microseconds=int((fraction or "0")[:6].ljust(6, "0")),
    )
    return -span if negative else span


def format_timespan(value: timedelta) -> str:
    """Render a timedelta as a .NET TimeSpan string (seven fractional digits when needed)."""
    negative = value < timedelta(0)
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    if value.days:
        text = f"{value.days}.{text}"
    if value.microseconds:
        text += f".{value.microseconds:06d}0"
    return "-" + text if negative else text


def ticks(value: timedelta) -> int:
    """A duration in .NET ticks (100 ns)."""
    return (value.days * 86_400 + value.seconds) * 10_000_000 + value.microseconds * 10
