"""The compiler: `compile_filter` checks the AST against the fields and builds a predicate."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping

from bridge.simulator.odata.fields import (
    _NORMALIZERS,
    FieldSpec,
    _constant,
    _FieldTable,
    _folded,
    _Value,
)
from bridge.simulator.odata.grammar import (
    _ARITY,
    _COMPARISON_LIST,
    _DATETIME_EXAMPLE,
    _GUID_EXAMPLE,
    _LITERAL_KINDS,
    _unknown_function,
)
from bridge.simulator.odata.nodes import (
    And,
    Call,
    Compare,
    Field,
    FilterError,
    Literal,
    LiteralKind,
    Node,
    Not,
    Or,
)
from bridge.simulator.odata.predicates import (
    _MIRRORED,
    _OPERATORS,
    Predicate,
    _comparison,
    _every,
    _some,
)

_ORDERED_TYPES = frozenset({"string", "datetime", "number"})


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


def _describe(node: Node, type_: LiteralKind) -> str:
    match node:
        case Field():
            return f"{type_} field '{'/'.join(node.path)}'"
        case Literal():
            return f"a {type_} literal"
        case Call():
            return f"the {type_} result of {node.name}()"
    return f"a {type_} condition"
