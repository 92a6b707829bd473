"""Rows of benchmark figures: each with the floor measured in the same run and its target.

Every benchmark prints its rows as a table, or with `--json` as one JSON line
that `bench/run_all.py` collects into a single table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Row:
    """One figure: what was measured, its floor (the same work done the cheapest way) and target."""

    name: str
    value: float
    unit: str
    floor: float | None = None
    #: What the floor measures.
    floor_is: str = ""
    target: str = ""
    #: Whether the target is met (None: no target).
    met: bool | None = None


def emit(rows: list[Row], *, as_json: bool) -> None:
    """Print `rows` as a table, or as one JSON line."""
    if as_json:
        print(json.dumps([asdict(r) for r in rows]))
    else:
        print(table(rows))


def read(line: str) -> list[Row]:
    """Rows back from a JSON line that `emit` printed."""
    data: list[dict[str, Any]] = json.loads(line)
    return [Row(**item) for item in data]


def table(rows: list[Row], *, markdown: bool = False) -> str:
    """The rows as a text table (or a Markdown one)."""
    head = ("figure", "value", "floor (same run)", "target", "met")
    body = [
        (
            r.name,
            f"{_number(r.value)} {r.unit}",
            "" if r.floor is None else f"{_number(r.floor)} {r.unit} ({r.floor_is})",
            r.target,
            {True: "yes", False: "NO", None: ""}[r.met],
        )
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in column) for column in zip(head, *body, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) for cells in body]
    return "\n".join(lines)


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"
