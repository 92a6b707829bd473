"""How API fields map onto records: FieldSpec, and readers of their typed, comparable values."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.simulator.odata.nodes import FieldType, FilterError, LiteralKind


@dataclass(frozen=True)
class FieldSpec:
    """How one filterable (or sortable) API field maps onto the simulator's records.

    `attr` is the Python attribute holding the value. For a nested API field such
    as `customFields/string1` (the key in the field table), `attr` names the
    attribute of the first segment and the remaining segments are looked up in
    it as dict keys or attributes. Values are expected as `str` (string),
    `str` or `uuid.UUID` (guid), `datetime`, naive meaning UTC (datetime),
    `int` or `float` (number) and `bool` (boolean), or None when missing.
    """

    attr: str
    type: FieldType


Reader = Callable[[object], Any]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _guid_text(value: object) -> str:
    return str(value).lower()


# How values of each type are brought to one comparable form (records and literals alike).
_NORMALIZERS: dict[str, Callable[[Any], Any]] = {"guid": _guid_text, "datetime": _aware}


@dataclass(frozen=True)
class _Value:
    """A compiled operand: its type, how to read it, and its value if it is a constant."""

    type: LiteralKind
    read: Reader
    constant: bool = False
    value: Any = None


def _constant(type_: LiteralKind, value: Any) -> _Value:
    return _Value(type_, lambda _record: value, constant=True, value=value)


def _folded(value: _Value) -> _Value:
    """The same string operand, case-folded so that comparisons ignore case."""
    if value.constant:
        return _constant(value.type, None if value.value is None else value.value.casefold())
    read = value.read
    return _Value(value.type, lambda r: None if (v := read(r)) is None else v.casefold())


class _FieldTable:
    """Case-insensitive lookup of API field names, producing readers for records."""

    def __init__(self, fields: Mapping[str, FieldSpec], parameter: str) -> None:
        self._fields = {name.lower(): (name, spec) for name, spec in fields.items()}
        self._parameter = parameter

    def value(self, path: tuple[str, ...], position: int) -> _Value:
        """The typed reader of a field path; FilterError if the table lacks it."""
        name = "/".join(path)
        entry = self._fields.get(name.lower())
        if entry is None:
            usage = "filterable" if self._parameter == "_filter" else "sortable"
            raise FilterError(
                f"unknown or non-{usage} field '{name}'", position, parameter=self._parameter
            )
        canonical, spec = entry
        read = _path_reader(spec.attr, tuple(canonical.split("/")[1:]))
        normalize = _NORMALIZERS.get(spec.type)
        return _Value(spec.type, read if normalize is None else _normalized(read, normalize))


def _normalized(read: Reader, normalize: Callable[[Any], Any]) -> Reader:
    return lambda r: None if (v := read(r)) is None else normalize(v)


def _path_reader(attr: str, rest: tuple[str, ...]) -> Reader:
    first = operator.attrgetter(attr)
    if not rest:
        return first

    def read(record: object) -> Any:
        value = first(record)
        for key in rest:
            if value is None:
                return None
            value = value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)
        return value

    return read
