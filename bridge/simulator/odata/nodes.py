"""The filter's AST: frozen dataclasses, the types of their values, and FilterError."""

from __future__ import annotations

import typing  # imported whole because the AST's `Literal` node takes the bare name
from dataclasses import dataclass, field
from datetime import datetime

FieldType = typing.Literal["string", "guid", "datetime", "number", "boolean"]
LiteralKind = typing.Literal["string", "guid", "datetime", "number", "boolean", "null"]
CompareOp = typing.Literal["eq", "ne", "gt", "ge", "lt", "le"]
LiteralValue = str | datetime | int | float | bool | None


class FilterError(ValueError):
    """A `_filter` or `_sort` text that cannot be parsed or does not fit the collection.

    `position` is the character offset of the problem in the text, or -1 for a
    node that was built by hand rather than parsed. `str()` of the error is a
    complete message for an HTTP 400 reply, for example
    `_filter: unexpected 'foo' at position 12; expected eq, ne, gt, ge, lt, le`.
    """

    def __init__(
        self, problem: str, position: int, *, hint: str | None = None, parameter: str = "_filter"
    ) -> None:
        self.problem = problem
        self.position = position
        self.hint = hint
        self.parameter = parameter
        where = f" at position {position}" if position >= 0 else ""
        tail = f"; {hint}" if hint else ""
        super().__init__(f"{parameter}: {problem}{where}{tail}")


# The AST. Nodes compare structurally; `position` (offset in the parsed text, -1
# when built by hand) only serves error messages and is left out of equality.


@dataclass(frozen=True)
class Literal:
    """A constant: guid values are lowercase text, datetimes aware UTC, null is None."""

    value: LiteralValue
    kind: LiteralKind
    position: int = field(default=-1, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Field:
    """A field reference; `path` has more than one segment for `a/b` nested fields."""

    path: tuple[str, ...]
    position: int = field(default=-1, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Call:
    """A function call; `name` is lowercase whatever the text's spelling."""

    name: str
    args: tuple[Node, ...]
    position: int = field(default=-1, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Compare:
    """A comparison `left op right`."""

    op: CompareOp
    left: Node
    right: Node
    position: int = field(default=-1, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class And:
    """Both operands hold."""

    left: Node
    right: Node
    position: int = field(default=-1, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Or:
    """At least one operand holds."""

    left: Node
    right: Node
    position: int = field(default=-1, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Not:
    """The operand does not hold."""

    operand: Node
    position: int = field(default=-1, compare=False, repr=False, kw_only=True)


Node = Literal | Field | Call | Compare | And | Or | Not
