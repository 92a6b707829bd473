"""Durations as people write them: `500ms`, `5s`, `10m`, `2h`, `1d`, or bare seconds."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration; raises ValueError naming the accepted forms."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"duration {text!r} is negative")
        return float(text)
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a duration (use 500ms, 5s, 10m, 2h, 1d or seconds)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]
