"""Sorting: `compile_sort` turns a `_sort` text into a stable multi-key sort."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

from bridge.simulator.odata.fields import FieldSpec, _FieldTable, _folded
from bridge.simulator.odata.grammar import _NAME
from bridge.simulator.odata.nodes import FilterError

T = TypeVar("T")


class Sorter(Protocol):
    """A compiled `_sort`: returns the records in order as a new list."""

    def __call__(self, records: Iterable[T], /) -> list[T]: ...


# Sort keys pair "has a value" with the value, so None sorts before everything.
_MISSING_KEY = (False,)


def compile_sort(text: str, fields: Mapping[str, FieldSpec]) -> Sorter:
    """Compile a `_sort` text (`name,-dateEdited`) into a stable multi-key sort.

    Field names match case-insensitively; `-` sorts that key descending. Missing
    values come first ascending and last descending; text ignores case. An empty
    text keeps the records' order. Raises FilterError for an unknown field or a
    malformed entry.
    """
    table = _FieldTable(fields, "_sort")
    keys = [_sort_key(table, entry, start) for entry, start in _sort_entries(text)]

    def sort(records: Iterable[T]) -> list[T]:
        items = list(records)
        # One stable pass per key, least significant first, orders by all keys.
        for key, descending in reversed(keys):
            items.sort(key=key, reverse=descending)
        return items

    return sort


def _sort_entries(text: str) -> Iterator[tuple[str, int]]:
    """Each comma-separated entry, stripped, with its offset in the text."""
    if not text.strip():
        return
    offset = 0
    for raw in text.split(","):
        entry = raw.strip()
        yield entry, offset + (len(raw) - len(raw.lstrip()))
        offset += len(raw) + 1


def _sort_key(table: _FieldTable, entry: str, start: int) -> tuple[Callable[[Any], Any], bool]:
    descending = entry.startswith("-")
    name = entry.removeprefix("-")
    if not _NAME.fullmatch(name):
        raise FilterError(
            f"invalid sort entry '{entry}'",
            start,
            hint="expected comma-separated field names, each optionally prefixed with '-'",
            parameter="_sort",
        )
    value = table.value(tuple(name.split("/")), start + descending)
    read = (_folded(value) if value.type == "string" else value).read
    return (lambda r: _MISSING_KEY if (v := read(r)) is None else (True, v)), descending
