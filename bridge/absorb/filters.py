"""Build Absorb's `_filter` and `_sort` query parameters without writing OData by hand.

    from bridge.absorb.filters import field, sort

    recent = field("dateEdited").ge(since) & ~field("status").eq(3)
    params = {"_filter": str(recent), "_sort": sort("dateEdited", "-id")}

Python values become OData literals through `literal`: text is quoted with `''`
escaping, `datetime` values become `datetime'…'` in UTC, and a value wrapped with
`guid` (or a `uuid.UUID`) becomes `guid'…'`. A plain `str` is always quoted text,
because Absorb compares GUID fields only with GUID literals.

Combining filters with `&`, `|` and `~` parenthesizes every compound operand, so
the text means what the Python expression says whatever OData's precedence.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from decimal import Decimal

from bridge.absorb.timefmt import format_datetime

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*")
# Words the filter grammar claims for itself; a field so named could not be referenced.
_RESERVED = frozenset(
    {"and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le", "true", "false", "null"}
)


class Guid(str):
    """Text that renders as a GUID literal (`guid'…'`) rather than as a quoted string.

    The value is validated and normalized to the canonical lowercase form;
    anything `uuid.UUID` cannot read raises ValueError.
    """

    __slots__ = ()

    def __new__(cls, value: str | uuid.UUID) -> Guid:
        """Validate `value` and keep its canonical form."""
        canonical = value if isinstance(value, uuid.UUID) else uuid.UUID(value)
        return super().__new__(cls, str(canonical))


def guid(value: str | uuid.UUID) -> Guid:
    """Mark `value` as a GUID, so that `literal` renders it as `guid'…'`."""
    return Guid(value)


LiteralValue = str | Guid | uuid.UUID | datetime | bool | int | float | None


def literal(value: LiteralValue) -> str:
    """Render a Python value as an OData literal.

    `None` is `null`; booleans are `true`/`false`; `Guid` and `uuid.UUID` are
    `guid'…'`; other text is quoted with `''` for a quote inside; datetimes are
    `datetime'…'` in UTC with seven fractional digits (naive values are taken as
    UTC); numbers are plain decimals. NaN and infinities raise ValueError, other
    types TypeError.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, Guid | uuid.UUID):
        return f"guid'{Guid(value)}'"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, datetime):
        return f"datetime'{format_datetime(value)}'"
    if isinstance(value, int):
        return str(int(value))  # int() so IntEnum members render as their number
    if isinstance(value, float):
        return _decimal(value)
    raise TypeError(f"no OData literal for {type(value).__name__}: {value!r}")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _decimal(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"OData has no literal for {value}")
    # The filter grammar has no exponent notation, so write every digit out;
    # Decimal of the shortest repr keeps the exact float on the way back.
    text = format(Decimal(repr(float(value))), "f")
    return text if "." in text else text + ".0"


@dataclass(frozen=True)
class Filter:
    """A rendered `_filter` condition; combine with `&`, `|` and `~`, render with `str()`.

    `atomic` says the text binds at least as tightly as `not`, so it needs no
    parentheses as an operand. A Filter made from raw text is treated as
    compound and is parenthesized when combined.
    """

    text: str
    atomic: bool = dataclass_field(default=False, compare=False)

    def __str__(self) -> str:
        return self.text

    def __and__(self, other: Filter) -> Filter:
        if not isinstance(other, Filter):
            return NotImplemented
        return Filter(f"{self._operand()} and {other._operand()}")

    def __or__(self, other: Filter) -> Filter:
        if not isinstance(other, Filter):
            return NotImplemented
        return Filter(f"{self._operand()} or {other._operand()}")

    def __invert__(self) -> Filter:
        return Filter(f"not ({self.text})", atomic=True)

    def __bool__(self) -> bool:
        # `a and b` on filters would silently keep only `b`; fail loudly instead.
        raise TypeError("a Filter has no truth value; combine filters with &, | and ~")

    def _operand(self) -> str:
        return self.text if self.atomic else f"({self.text})"


@dataclass(frozen=True)
class Operand:
    """A value inside a filter: a field, or a function such as `tolower` applied to one.

    The comparison methods take a Python value (rendered with `literal`) or
    another Operand.
    """

    text: str

    def __str__(self) -> str:
        return self.text

    def eq(self, other: Operand | LiteralValue) -> Filter:
        """`self eq other`; `None` tests for null."""
        return self._compare("eq", other)

    def ne(self, other: Operand | LiteralValue) -> Filter:
        """`self ne other`; `None` tests for a value being present."""
        return self._compare("ne", other)

    def gt(self, other: Operand | LiteralValue) -> Filter:
        """`self gt other`."""
        return self._compare("gt", other)

    def ge(self, other: Operand | LiteralValue) -> Filter:
        """`self ge other`."""
        return self._compare("ge", other)

    def lt(self, other: Operand | LiteralValue) -> Filter:
        """`self lt other`."""
        return self._compare("lt", other)

    def le(self, other: Operand | LiteralValue) -> Filter:
        """`self le other`."""
        return self._compare("le", other)

    def startswith(self, prefix: str | Operand) -> Filter:
        """`startswith(self,prefix)`; Absorb ignores case."""
        return Filter(f"startswith({self.text},{_text_operand(prefix)})", atomic=True)

    def endswith(self, suffix: str | Operand) -> Filter:
        """`endswith(self,suffix)`; Absorb ignores case."""
        return Filter(f"endswith({self.text},{_text_operand(suffix)})", atomic=True)

    def contains(self, part: str | Operand) -> Filter:
        """`substringof(part,self)`: `part` occurs in this value; Absorb ignores case."""
        return Filter(f"substringof({_text_operand(part)},{self.text})", atomic=True)

    def lower(self) -> Operand:
        """`tolower(self)`, usable wherever a field is."""
        return Operand(f"tolower({self.text})")

    def upper(self) -> Operand:
        """`toupper(self)`, usable wherever a field is."""
        return Operand(f"toupper({self.text})")

    def _compare(self, op: str, other: Operand | LiteralValue) -> Filter:
        if other is None and op not in ("eq", "ne"):
            raise ValueError(f"null can only be compared with eq or ne, not {op}")
        right = other.text if isinstance(other, Operand) else literal(other)
        return Filter(f"{self.text} {op} {right}", atomic=True)


@dataclass(frozen=True)
class FieldRef(Operand):
    """A field by its API name; nested fields are written `a/b`."""

    def __post_init__(self) -> None:
        _check_name(self.text)


def field(name: str) -> FieldRef:
    """Refer to the API field `name` (as in `field("dateEdited").ge(since)`)."""
    return FieldRef(name)


def sort(*fields: str) -> str:
    """Render a `_sort` value: `sort("name", "-dateEdited")` is `name,-dateEdited`."""
    if not fields:
        raise ValueError("sort() needs at least one field")
    for entry in fields:
        _check_name(entry.removeprefix("-"))
    return ",".join(fields)


def _text_operand(value: str | Operand) -> str:
    # Plain text even for a Guid: the string functions only take text.
    return value.text if isinstance(value, Operand) else _quote(value)


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid field name {name!r}: expected letters, digits and _, "
            "not starting with a digit, nested with /"
        )
    if name.lower() in _RESERVED:
        raise ValueError(f"invalid field name {name!r}: it is a filter keyword")
