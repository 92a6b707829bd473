"""Absorb's `_filter` and `_sort` query languages, for the simulator to answer them.

`_filter` is the OData subset Absorb documents: comparisons (`eq ne gt ge lt le`),
`and`, `or`, `not`, parentheses, the functions `substringof`, `startswith`,
`endswith`, `tolower` and `toupper`, and the literals `'text'`, `guid'…'`,
`datetime'…'`, numbers, `true`, `false` and `null`. The text goes through three
pure stages: `_tokenize` cuts it into tokens, `parse_filter` builds an AST of
frozen dataclasses, and `compile_filter` checks that AST against the collection's
filterable fields and turns it into nested closures, so that answering a request
costs a few function calls per record rather than a tree walk.

Semantics follow what Absorb (SQL Server behind Entity Framework) shows:

* Text comparisons ignore case, as the database's collation does. Ordering is
  by code point after case folding, which agrees with the collation on plain
  letters and digits but not on every accent or symbol.
* A missing value (None) equals only null; `ne` is exactly `not eq`, so a missing
  value is `ne` anything but null. Ordering comparisons and the string functions
  are false for a missing value. Logic is two-valued: `not` negates plainly.

`_sort` is a comma-separated list of fields, each optionally prefixed with `-` for
descending order; `compile_sort` turns it into a stable multi-key sort.

Every problem with either text raises `FilterError`, which names the offending
position so that the simulator's HTTP 400 replies are as helpful as possible.
"""

from __future__ import annotations

import operator
import re
import typing  # imported whole because the AST's `Literal` node takes the bare name
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypeVar

from bridge.absorb.timefmt import parse_datetime

T = TypeVar("T")

FieldType = typing.Literal["string", "guid", "datetime", "number", "boolean"]
LiteralKind = typing.Literal["string", "guid", "datetime", "number", "boolean", "null"]
CompareOp = typing.Literal["eq", "ne", "gt", "ge", "lt", "le"]
LiteralValue = str | datetime | int | float | bool | None

# Deeper nesting (parentheses, `not`, function calls) is refused rather than
# risking Python's recursion limit on hostile input; real filters nest a few levels.
MAX_NESTING = 32

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_WHITESPACE = re.compile(r"\s+")
_GUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")

_LITERAL_KINDS: frozenset[str] = frozenset(typing.get_args(LiteralKind))
_COMPARISONS: frozenset[str] = frozenset(typing.get_args(CompareOp))
_KEYWORDS = _COMPARISONS | {"and", "or", "not"}
_KEYWORD_LITERALS: dict[str, tuple[LiteralKind, bool | None]] = {
    "true": ("boolean", True),
    "false": ("boolean", False),
    "null": ("null", None),
}
_TYPED_QUOTES = ("guid", "datetime")
_ARITY = {"substringof": 2, "startswith": 2, "endswith": 2, "tolower": 1, "toupper": 1}
_FUNCTION_LIST = ", ".join(sorted(_ARITY))
_COMPARISON_LIST = "eq, ne, gt, ge, lt, le"

_GUID_EXAMPLE = "guid'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx'"
_DATETIME_EXAMPLE = "datetime'2024-01-31T10:00:00Z'"


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


# ---------------------------------------------------------------------------
# Tokenizer


class _Token(NamedTuple):
    # kind: a LiteralKind, "name", "keyword", "(", ")", "," or "end".
    kind: str
    text: str
    value: LiteralValue
    position: int


_PUNCTUATION = frozenset("(),")


def _tokenize(text: str) -> list[_Token]:
    """Cut a filter into tokens, ending with an "end" token at the text's length."""
    tokens: list[_Token] = []
    i = 0
    while True:
        if space := _WHITESPACE.match(text, i):
            i = space.end()
        if i >= len(text):
            tokens.append(_Token("end", "", None, len(text)))
            return tokens
        token = _next_token(text, i)
        tokens.append(token)
        i += len(token.text)


def _next_token(text: str, i: int) -> _Token:
    char = text[i]
    if char in _PUNCTUATION:
        return _Token(char, char, None, i)
    if char == "'":
        value, end = _read_quoted(text, i)
        return _Token("string", text[i:end], value, i)
    if number := _NUMBER.match(text, i):
        return _Token("number", number.group(), _number(number.group(), i), i)
    if name := _NAME.match(text, i):
        return _name_token(text, name.group(), i)
    hint = "string literals use single quotes" if char == '"' else None
    raise FilterError(f"unexpected character {char!r}", i, hint=hint)


def _number(text: str, position: int) -> int | float:
    if "." in text:
        return float(text)
    try:
        return int(text)
    except ValueError:  # Python refuses to convert integers of thousands of digits
        raise FilterError("number literal too long", position) from None


def _name_token(text: str, name: str, i: int) -> _Token:
    lowered = name.lower()
    end = i + len(name)
    if lowered in _TYPED_QUOTES and text.startswith("'", end):
        return _typed_literal(text, lowered, i, end)
    if lowered in _KEYWORD_LITERALS:
        kind, value = _KEYWORD_LITERALS[lowered]
        return _Token(kind, name, value, i)
    if lowered in _KEYWORDS:
        return _Token("keyword", name, lowered, i)
    return _Token("name", name, None, i)


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read the quoted text opening at `start`; return its value and the offset past it."""
    parts: list[str] = []
    i = start + 1
    while (close := text.find("'", i)) >= 0:
        parts.append(text[i:close])
        if not text.startswith("'", close + 1):
            return "".join(parts), close + 1
        parts.append("'")  # '' inside quotes stands for one quote
        i = close + 2
    raise FilterError(
        "unterminated string literal", start, hint="close it with ' and write '' for a quote inside"
    )


def _typed_literal(text: str, kind: str, start: int, quote: int) -> _Token:
    content, end = _read_quoted(text, quote)
    source = text[start:end]
    if kind == "guid":
        if not _GUID.fullmatch(content):
            raise FilterError(f"invalid GUID {source}", start, hint=f"expected {_GUID_EXAMPLE}")
        return _Token("guid", source, content.lower(), start)
    try:
        moment = parse_datetime(content)
    except (ValueError, OverflowError):  # out-of-range fields or offsets past year 1/9999
        raise FilterError(
            f"invalid datetime {source}", start, hint=f"expected {_DATETIME_EXAMPLE}"
        ) from None
    return _Token("datetime", source, moment, start)


# ---------------------------------------------------------------------------
# Parser


def parse_filter(text: str) -> Node:
    """Parse a `_filter` text into its AST; raise FilterError on any syntax error.

    Precedence from loosest to tightest: `or`, `and`, `not`, comparison. `and`
    and `or` associate to the left; comparisons do not chain.
    """
    return _Parser(_tokenize(text)).parse()


class _Parser:
    """Recursive descent over the token list, one method per grammar rule."""

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._index = 0
        self._depth = 0

    def parse(self) -> Node:
        if self._peek().kind == "end":
            raise FilterError("the filter is empty", 0)
        node = self._or()
        token = self._peek()
        if token.kind == ")":
            raise FilterError("unmatched ')'", token.position)
        if token.kind != "end":
            raise _unexpected(token, "and, or, or end of input")
        return node

    def _or(self) -> Node:
        node = self._and()
        while self._at_keyword("or"):
            op = self._advance()
            node = Or(node, self._and(), position=op.position)
        return node

    def _and(self) -> Node:
        node = self._unary()
        while self._at_keyword("and"):
            op = self._advance()
            node = And(node, self._unary(), position=op.position)
        return node

    def _unary(self) -> Node:
        if not self._at_keyword("not"):
            return self._comparison()
        token = self._advance()
        with self._nested(token):
            return Not(self._unary(), position=token.position)

    def _comparison(self) -> Node:
        left = self._operand()
        token = self._peek()
        if token.kind == "keyword" and token.value in _COMPARISONS:
            self._advance()
            op = typing.cast(CompareOp, token.value)
            return Compare(op, left, self._operand(), position=token.position)
        if token.kind in ("end", ")") or self._at_keyword("and") or self._at_keyword("or"):
            return left
        raise _unexpected(token, _COMPARISON_LIST)

    def _operand(self) -> Node:
        token = self._advance()
        if token.kind in _LITERAL_KINDS:
            kind = typing.cast(LiteralKind, token.kind)
            return Literal(token.value, kind, position=token.position)
        if token.kind == "(":
            with self._nested(token):
                node = self._or()
            self._close(token, "')', and, or")
            return node
        if token.kind == "name":
            if self._peek().kind == "(":
                return self._call(token)
            return Field(tuple(token.text.split("/")), position=token.position)
        raise _unexpected(token, "a field, a literal, a function or '('")

    def _call(self, name: _Token) -> Call:
        function = name.text.lower()
        arity = _ARITY.get(function)
        if arity is None:
            raise _unknown_function(name.text, name.position)
        opening = self._advance()
        args: list[Node] = []
        with self._nested(opening):
            if self._peek().kind != ")":
                args.append(self._operand())
                while self._peek().kind == ",":
                    self._advance()
                    args.append(self._operand())
        self._close(opening, "',' or ')'")
        if len(args) != arity:
            raise FilterError(
                f"{function}() takes {arity} argument{'s' * (arity > 1)}, got {len(args)}",
                name.position,
            )
        return Call(function, tuple(args), position=name.position)

    def _close(self, opening: _Token, expected: str) -> None:
        token = self._advance()
        if token.kind == "end":
            raise FilterError("unclosed '('", opening.position, hint="add the missing ')'")
        if token.kind != ")":
            raise _unexpected(token, expected)

    @contextmanager
    def _nested(self, token: _Token) -> Iterator[None]:
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise FilterError(f"nesting deeper than {MAX_NESTING} levels", token.position)
        yield
        self._depth -= 1

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _advance(self) -> _Token:
        token = self._tokens[self._index]
        if token.kind != "end":  # the end token stays put so errors can quote it
            self._index += 1
        return token

    def _at_keyword(self, word: str) -> bool:
        token = self._peek()
        return token.kind == "keyword" and token.value == word


def _unknown_function(name: str, position: int) -> FilterError:
    return FilterError(f"unknown function '{name}'", position, hint=f"expected {_FUNCTION_LIST}")


def _unexpected(token: _Token, expected: str) -> FilterError:
    if token.kind == "end":
        what = "end of input"
    elif token.kind in _LITERAL_KINDS:
        what = f"{token.kind} literal {token.text}"
    else:
        what = f"'{token.text}'"
    return FilterError(f"unexpected {what}", token.position, hint=f"expected {expected}")


# ---------------------------------------------------------------------------
# Compiler

Reader = Callable[[object], Any]
Predicate = Callable[[object], bool]

_ORDERED_TYPES = frozenset({"string", "datetime", "number"})
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
_LITERAL_HINTS: dict[str, str] = {
    "string": "quote text, as in 'abc'",
    "guid": f"use {_GUID_EXAMPLE}",
    "datetime": f"use {_DATETIME_EXAMPLE}",
    "number": "write numbers without quotes, as in 3 or -1.5",
    "boolean": "use true or false without quotes",
}
_STRING_TESTS: dict[str, Callable[[str, str], bool]] = {
    "startswith": str.startswith,
    "endswith": str.endswith,
    "substringof": operator.contains,  # as called below: (haystack, needle)
}
_STRING_MAPS: dict[str, Callable[[str], str]] = {"tolower": str.lower, "toupper": str.upper}


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


def compile_filter(node: Node, fields: Mapping[str, FieldSpec]) -> Callable[[object], bool]:
    """Check a parsed filter against a collection's fields and compile it to a predicate.

    `fields` maps the API's field names (matched case-insensitively) to how the
    records hold them. Raises FilterError for an unknown field, a type mismatch
    (such as a guid field compared with a plain string), an ordering comparison
    on anything but text, numbers and datetimes, or an operand of `and`/`or`/`not`
    that is not a condition.
    """
    return _Compiler(_FieldTable(fields, "_filter")).condition(node)


class _Compiler:
    """Turns AST nodes into closures, checking types on the way."""

    def __init__(self, table: _FieldTable) -> None:
        self._table = table

    def condition(self, node: Node) -> Predicate:
        """A predicate for a node that must be true or false."""
        match node:
            case And():
                return _every([self.condition(n) for n in _chain(node, And)])
            case Or():
                return _some([self.condition(n) for n in _chain(node, Or)])
            case Not():
                inner = self.condition(node.operand)
                return lambda r: not inner(r)
            case Compare():
                return self._compare(node)
            case Call() if node.name in _STRING_TESTS:
                return self._string_test(node)
        value = self.value(node)
        if value.type != "boolean":
            raise FilterError(
                f"{_describe(node, value.type)} is not a condition",
                node.position,
                hint=f"compare it using {_COMPARISON_LIST}",
            )
        read = value.read
        return lambda r: read(r) is True

    def value(self, node: Node) -> _Value:
        """The typed reader for a node used as an operand."""
        match node:
            case Literal():
                return _literal_value(node)
            case Field():
                return self._table.value(node.path, node.position)
            case Call() if node.name not in _ARITY:
                raise _unknown_function(node.name, node.position)
            case Call() if node.name in _STRING_MAPS:
                return self._string_map(node)
        return _Value("boolean", self.condition(node))

    def _compare(self, node: Compare) -> Predicate:
        if node.op not in _OPERATORS:
            raise FilterError(f"unknown operator '{node.op}'", node.position)
        left, right = self.value(node.left), self.value(node.right)
        _check_comparable(node, left, right)
        if left.type == "string" and right.type == "string":
            left, right = _folded(left), _folded(right)
        op = node.op
        if left.constant and not right.constant:
            left, right, op = right, left, _MIRRORED[op]
        return _comparison(op, left, right)

    def _string_test(self, node: Call) -> Predicate:
        first, second = (_folded(v) for v in self._string_args(node))
        haystack, needle = (second, first) if node.name == "substringof" else (first, second)
        test, read = _STRING_TESTS[node.name], haystack.read
        if needle.constant:
            text = needle.value
            return lambda r: (h := read(r)) is not None and test(h, text)
        find = needle.read
        return lambda r: (h := read(r)) is not None and (n := find(r)) is not None and test(h, n)

    def _string_map(self, node: Call) -> _Value:
        (arg,) = self._string_args(node)
        convert = _STRING_MAPS[node.name]
        if arg.constant:
            return _constant("string", convert(arg.value))
        read = arg.read
        return _Value("string", lambda r: None if (v := read(r)) is None else convert(v))

    def _string_args(self, node: Call) -> list[_Value]:
        arity = _ARITY[node.name]
        if len(node.args) != arity:
            raise FilterError(
                f"{node.name}() takes {arity} argument{'s' * (arity > 1)}, got {len(node.args)}",
                node.position,
            )
        values = [self.value(arg) for arg in node.args]
        for arg, value in zip(node.args, values, strict=True):
            if value.type != "string":
                raise FilterError(
                    f"{node.name}() takes text, not {_describe(arg, value.type)}",
                    arg.position,
                    hint=_LITERAL_HINTS["string"] if isinstance(arg, Literal) else None,
                )
        return values


def _literal_value(node: Literal) -> _Value:
    if node.kind not in _LITERAL_KINDS:
        raise FilterError(f"unknown literal kind '{node.kind}'", node.position)
    normalize = _NORMALIZERS.get(node.kind)
    value = node.value if normalize is None or node.value is None else normalize(node.value)
    return _constant(node.kind, value)


def _check_comparable(node: Compare, left: _Value, right: _Value) -> None:
    if "null" in (left.type, right.type):
        if node.op not in ("eq", "ne"):
            raise FilterError("null can only be compared with eq or ne", node.position)
        return
    if left.type != right.type:
        # Against a literal, say how to write one of the other side's type.
        hint = None
        if isinstance(node.left, Literal) != isinstance(node.right, Literal):
            hint = _LITERAL_HINTS[right.type if isinstance(node.left, Literal) else left.type]
        raise FilterError(
            f"cannot compare {_describe(node.left, left.type)} "
            f"with {_describe(node.right, right.type)}",
            node.right.position,
            hint=hint,
        )
    if node.op not in ("eq", "ne") and left.type not in _ORDERED_TYPES:
        raise FilterError(
            f"'{node.op}' does not apply to {left.type} values", node.position, hint="use eq or ne"
        )


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


def _chain(node: And | Or, kind: type[And] | type[Or]) -> list[Node]:
    """The operands of a run of `and` (or `or`) nodes, left to right.

    Flattening keeps long chains such as `id eq … or id eq … or …` from nesting one
    closure per operator, which would run into Python's recursion limit.
    """
    operands: list[Node] = []
    pending: list[Node] = [node]
    while pending:
        current = pending.pop()
        if isinstance(current, kind):
            pending += [current.right, current.left]
        else:
            operands.append(current)
    return operands


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


def _describe(node: Node, type_: LiteralKind) -> str:
    match node:
        case Field():
            return f"{type_} field '{'/'.join(node.path)}'"
        case Literal():
            return f"a {type_} literal"
        case Call():
            return f"the {type_} result of {node.name}()"
    return f"a {type_} condition"


# ---------------------------------------------------------------------------
# Sorting


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
