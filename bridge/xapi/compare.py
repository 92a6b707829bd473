"""Whether a statement an LRS holds is the one the bridge sent. Pure.

An LRS adds to what it stores (`stored`, `authority`, `version`, `objectType`) and
may write a timestamp or a number differently, so "the same" means: every value
the bridge sent is there, equal, with timestamps compared as instants.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


def first_difference(sent: Any, stored: Any, path: str = "") -> str | None:
    """None when `stored` holds everything in `sent`; else the first path that differs."""
    where = path or "statement"
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return f"{where}: not an object in the LRS"
        for key, value in sent.items():
            found = first_difference(value, stored.get(key), f"{path}.{key}" if path else key)
            if found is not None:
                return found
        return None
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return f"{where}: a different list in the LRS"
        for i, (mine, theirs) in enumerate(zip(sent, stored, strict=True)):
            found = first_difference(mine, theirs, f"{where}[{i}]")
            if found is not None:
                return found
        return None
    if _same(sent, stored):
        return None
    return f"{where}: sent {_short(sent)}, the LRS holds {_short(stored)}"


def _same(sent: Any, stored: Any) -> bool:
    if isinstance(sent, bool) or isinstance(stored, bool):
        return sent is stored
    if isinstance(sent, int | float) and isinstance(stored, int | float):
        return float(sent) == float(stored)
    if isinstance(sent, str) and isinstance(stored, str) and sent != stored:
        return _same_instant(sent, stored) or (sent.lower() == stored.lower() and _is_uuid(sent))
    return bool(sent == stored)


def _same_instant(a: str, b: str) -> bool:
    try:
        first = datetime.fromisoformat(a.replace("Z", "+00:00"))
        second = datetime.fromisoformat(b.replace("Z", "+00:00"))
    except ValueError:
        return False
    if first.tzinfo is None or second.tzinfo is None:
        return False
    return first == second


def _is_uuid(text: str) -> bool:
    return len(text) == 36 and text.count("-") == 4


def _short(value: Any) -> str:
    return ascii(value)[:60]
