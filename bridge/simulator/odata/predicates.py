"""The closures a compiled filter is made of: comparisons and runs of `and` and `or`."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from bridge.simulator.odata.fields import _Value
from bridge.simulator.odata.nodes import CompareOp

Predicate = Callable[[object], bool]

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
# The operator that keeps a comparison's meaning when its operands swap sides.
_MIRRORED: dict[CompareOp, CompareOp] = {
    "eq": "eq",
    "ne": "ne",
    "gt": "lt",
    "ge": "le",
    "lt": "gt",
    "le": "ge",
}


def _comparison(op: CompareOp, left: _Value, right: _Value) -> Predicate:
    # Python's == and != already give Absorb's null semantics (None equals only
    # None); ordering must rule out None first.
    compare, read = _OPERATORS[op], left.read
    ordering = op not in ("eq", "ne")
    if right.constant:
        value = right.value
        if ordering:
            return lambda r: (v := read(r)) is not None and compare(v, value)
        return lambda r: compare(read(r), value)
    other = right.read
    if ordering:
        return lambda r: (
            (a := read(r)) is not None and (b := other(r)) is not None and compare(a, b)
        )
    return lambda r: compare(read(r), other(r))


def _every(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 2:
        first, second = predicates
        return lambda r: first(r) and second(r)

    def every(record: object) -> bool:
        return all(predicate(record) for predicate in predicates)

    return every


def _some(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 2:
        first, second = predicates
        return lambda r: first(r) or second(r)

    def some(record: object) -> bool:
        return any(predicate(record) for predicate in predicates)

    return some
