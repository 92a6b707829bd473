"""Answering collection queries: `_filter`, `_sort`, `modifiedSince`, `status` and paging."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from bridge.absorb.timefmt import parse_datetime
from bridge.simulator.odata import (
    FieldSpec,
    FilterError,
    compile_filter,
    compile_sort,
    parse_filter,
)
from bridge.simulator.tenant import SimError

R = TypeVar("R")

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
MAX_OFFSET = 65535


@dataclass(frozen=True)
class ListQuery:
    """What a request asks of a collection; `offset` is a page index, as in Absorb."""

    filter: str | None = None
    sort: str | None = None
    modified_since: datetime | None = None
    status: int | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def parse_query(params: Mapping[str, str], *, paged: bool) -> ListQuery:
    """Read the query parameters Absorb takes, with 400s that say what is wrong."""
    modified_since = None
    if params.get("modifiedSince"):
        try:
            modified_since = parse_datetime(params["modifiedSince"])
        except ValueError as e:
            raise SimError(400, f"modifiedSince: {e}") from None
    status = _int(params, "status", None, 0, 12)
    if not paged:
        return ListQuery(modified_since=modified_since, status=status)
    # `limit`/`offset` are the deprecated spellings of `_limit`/`_offset`.
    limit_key = "_limit" if "_limit" in params else "limit"
    offset_key = "_offset" if "_offset" in params else "offset"
    return ListQuery(
        filter=params.get("_filter") or None,
        sort=params.get("_sort") or None,
        modified_since=modified_since,
        status=status,
        limit=_int(params, limit_key, DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT,
        offset=_int(params, offset_key, 0, 0, MAX_OFFSET) or 0,
    )


def _int(
    params: Mapping[str, str], key: str, default: int | None, low: int, high: int
) -> int | None:
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SimError(400, f"{key}: {raw!r} is not an integer") from None
    if not low <= value <= high:
        raise SimError(400, f"{key}: {value} is out of range {low}..{high}")
    return value


class QueryCache:
    """Remembers the filtered, sorted result of recent queries until their scope changes.

    Paging a large scope asks the same query once per page; while nothing in the
    scope changes, the pages are slices of one result, as a database would give.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], list[Any]] = OrderedDict()

    def select(
        self,
        scope: str,
        version: int,
        records: Callable[[], Iterable[R]],
        fields: Mapping[str, FieldSpec],
        query: ListQuery,
    ) -> list[R]:
        """The records of `scope` that match the query, in its order."""
        key = (scope, version, query.filter, query.sort, query.modified_since, query.status)
        cached = self._entries.get(key)
        if cached is not None:
            self._entries.move_to_end(key)
            return cached
        result = select(records(), fields, query)
        self._entries[key] = result
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return result


def select(records: Iterable[R], fields: Mapping[str, FieldSpec], query: ListQuery) -> list[R]:
    """Filter and sort records; `modifiedSince` is exclusive ("edited after this date")."""
    try:
        matches = compile_filter(parse_filter(query.filter), fields) if query.filter else None
        order = compile_sort(query.sort, fields) if query.sort else None
    except FilterError as e:
        raise SimError(400, str(e)) from None
    since, status = query.modified_since, query.status
    result = [
        r
        for r in records
        if (since is None or r.date_edited > since)  # type: ignore[attr-defined]
        and (status is None or r.status == status)  # type: ignore[attr-defined]
        and (matches is None or matches(r))
    ]
    return order(result) if order else result


def page_body(
    items: list[Any], query: ListQuery, key: str, render: Callable[[Any], Any]
) -> dict[str, Any]:
    """Absorb's page wrapper around one page of `items`."""
    start = query.offset * query.limit
    chunk = items[start : start + query.limit]
    return {
        "totalItems": len(items),
        "returnedItems": len(chunk),
        "limit": query.limit,
        "offset": query.offset,
        key: [render(r) for r in chunk],
    }
