"""Absorb's .NET TimeSpan strings and tick counts as xAPI (ISO 8601) durations."""

from __future__ import annotations

from datetime import timedelta

from bridge.absorb.timefmt import parse_timespan

#: .NET ticks are 100 ns.
TICKS_PER_SECOND = 10_000_000


def iso_duration(span: timedelta) -> str:
    """`span` as an ISO 8601 duration (`PT1H2M3.5S`, `P2DT4H`); xAPI wants it non-negative.

    Raises ValueError for a negative span: time spent cannot be below zero.
    """
    if span < timedelta(0):
        raise ValueError(f"a negative time spent ({span}) is not a duration")
    days = span.days
    hours, rest = divmod(span.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = "P" + (f"{days}D" if days else "")
    clock = ""
    if hours:
        clock += f"{hours}H"
    if minutes:
        clock += f"{minutes}M"
    if seconds or span.microseconds:
        fraction = f".{span.microseconds:06d}".rstrip("0") if span.microseconds else ""
        # xAPI asks LRSs to keep 0.01 s; more digits are allowed and kept as Absorb gave them.
        clock += f"{seconds}{fraction}S"
    if clock:
        text += "T" + clock
    return text if text != "P" else "PT0S"


def from_timespan(text: object) -> str:
    """Absorb's `timeSpent` (`[-][d.]hh:mm:ss[.fffffff]`) as an ISO 8601 duration.

    Raises ValueError naming the value when it is not a TimeSpan or is negative.
    """
    if not isinstance(text, str):
        raise ValueError(f"timeSpent {ascii(text)[:40]} is not a TimeSpan string")
    try:
        return iso_duration(parse_timespan(text))
    except OverflowError:
        raise ValueError(f"timeSpent {text[:40]!r} is beyond what a duration holds") from None


def from_ticks(ticks: object) -> str:
    """Absorb's `timeSpentTicks` (100 ns units) as an ISO 8601 duration."""
    if isinstance(ticks, bool) or not isinstance(ticks, int):
        raise ValueError(f"timeSpentTicks {ascii(ticks)[:40]} is not a whole number")
    try:
        return iso_duration(timedelta(microseconds=ticks // 10))
    except OverflowError:
        raise ValueError(f"timeSpentTicks {ticks} is beyond what a duration holds") from None
