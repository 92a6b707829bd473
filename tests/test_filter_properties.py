"""Property tests tying the client's filter builder to the simulator's parser and compiler.

The AST strategy below draws filters the way a client holds them: GUIDs as
`uuid.UUID` objects or text in any letter case, datetimes naive (meaning UTC) or
in any zone. The builder renders those, while the parser hands back canonical
values, so the round trip compares the parse with `normalize(ast)`, which
applies exactly the two canonicalizations the grammar promises: GUIDs become
lowercase text and datetimes become aware UTC. Nothing else may change.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.absorb.filters import Filter, Operand, field, guid, literal, sort
from bridge.simulator.odata import (
    And,
    Call,
    Compare,
    Field,
    FieldSpec,
    FilterError,
    Literal,
    Node,
    Not,
    Or,
    compile_filter,
    compile_sort,
    parse_filter,
)

PROPERTY = settings(max_examples=150, deadline=None)

FIELDS = {
    "name": FieldSpec("name", "string"),
    "title": FieldSpec("title", "string"),
    "id": FieldSpec("id", "guid"),
    "ownerId": FieldSpec("owner_id", "guid"),
    "dateAdded": FieldSpec("date_added", "datetime"),
    "dateEdited": FieldSpec("date_edited", "datetime"),
    "score": FieldSpec("score", "number"),
    "isActive": FieldSpec("is_active", "boolean"),
    "extra/note": FieldSpec("extra", "string"),
}
FIELDS_BY_TYPE = {
    kind: [name for name, spec in FIELDS.items() if spec.type == kind]
    for kind in ("string", "guid", "datetime", "number", "boolean")
}
ORDERED = ("string", "datetime", "number")
EQUALITY_OPS = ("eq", "ne")
ALL_OPS = ("eq", "ne", "gt", "ge", "lt", "le")


@dataclass
class Record:
    """A simulator-like record; `extra` holds the nested `extra/note` field."""

    name: str | None
    title: str | None
    id: Any
    owner_id: Any
    date_added: datetime | None
    date_edited: datetime | None
    score: int | float | None
    is_active: bool | None
    extra: Any


# --- value pools -------------------------------------------------------------------

ZONES = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)


def in_zone(moment: datetime, zone: timezone | None) -> datetime:
    """The same instant, naive (meaning UTC) or expressed in `zone`."""
    return moment.replace(tzinfo=None) if zone is None else moment.astimezone(zone)


def guid_forms(value: uuid.UUID) -> st.SearchStrategy[Any]:
    """A GUID as a client may hold it: a UUID object or text in either case."""
    return st.sampled_from([value, str(value), str(value).upper()])


@dataclass(frozen=True)
class Pools:
    """Where literal and record values come from: wide for round trips, narrow for semantics."""

    strings: st.SearchStrategy[str]
    guids: st.SearchStrategy[uuid.UUID]
    moments: st.SearchStrategy[datetime]
    numbers: st.SearchStrategy[int | float]


WIDE = Pools(
    strings=st.text(),
    guids=st.uuids(),
    # Years before 1000 are left out: timefmt.format_datetime leaves them unpadded.
    moments=st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(9999, 12, 30)).map(
        lambda d: d.replace(tzinfo=UTC)
    ),
    numbers=st.integers() | st.floats(allow_nan=False, allow_infinity=False),
)
_GUIDS = [uuid.UUID(int=n * 0x1111_1111_1111_1111) for n in (1, 2, 10)]
_BASE = datetime(2024, 1, 31, 10, tzinfo=UTC)
NARROW = Pools(
    strings=st.text(alphabet="aAbBß' ", max_size=3),
    guids=st.sampled_from(_GUIDS),
    moments=st.sampled_from([_BASE + timedelta(microseconds=n) for n in (-1, 0, 1, 3_600_000_000)]),
    numbers=st.sampled_from([-1, 0, 0.5, 2, 2.0, 3]),
)


# --- AST strategies ----------------------------------------------------------------


def literals(kind: str, pools: Pools) -> st.SearchStrategy[Literal]:
    """Literals of one kind, their values in client form (see the module docstring)."""
    if kind == "string":
        return pools.strings.map(lambda v: Literal(v, "string"))
    if kind == "guid":
        return pools.guids.flatmap(guid_forms).map(lambda v: Literal(v, "guid"))
    if kind == "datetime":
        return st.builds(in_zone, pools.moments, ZONES).map(lambda v: Literal(v, "datetime"))
    if kind == "number":
        return pools.numbers.map(lambda v: Literal(v, "number"))
    return st.booleans().map(lambda v: Literal(v, "boolean"))


def operands(kind: str) -> st.SearchStrategy[Node]:
    """Fields of one type, and for text also `tolower`/`toupper` of one."""
    fields = st.sampled_from(FIELDS_BY_TYPE[kind]).map(lambda n: Field(tuple(n.split("/"))))
    if kind != "string":
        return fields
    return fields | st.builds(
        lambda name, f: Call(name, (f,)), st.sampled_from(["tolower", "toupper"]), fields
    )


@st.composite
def comparisons(draw: st.DrawFn, pools: Pools) -> Compare:
    """A well-typed comparison: a field against a literal, null or a field of its type."""
    kind = draw(st.sampled_from(sorted(FIELDS_BY_TYPE)))
    left = draw(operands(kind))
    right = draw(literals(kind, pools) | operands(kind) | st.just(Literal(None, "null")))
    is_null = isinstance(right, Literal) and right.kind == "null"
    ops = ALL_OPS if kind in ORDERED and not is_null else EQUALITY_OPS
    return Compare(draw(st.sampled_from(ops)), left, right)


@st.composite
def string_tests(draw: st.DrawFn, pools: Pools) -> Call:
    """startswith/endswith/substringof on text fields, with a literal or a field to look for."""
    name = draw(st.sampled_from(["startswith", "endswith", "substringof"]))
    subject = draw(operands("string"))
    part = draw(literals("string", pools) | operands("string"))
    return Call(name, (part, subject) if name == "substringof" else (subject, part))


def conditions(pools: Pools) -> st.SearchStrategy[Node]:
    """Random nestings of and/or/not over comparisons and string tests."""
    leaves = comparisons(pools) | string_tests(pools)
    return st.recursive(
        leaves,
        lambda inner: (
            st.builds(And, inner, inner) | st.builds(Or, inner, inner) | st.builds(Not, inner)
        ),
        max_leaves=8,
    )


# --- rendering through the client builder, and normalization -------------------------


def to_filter(node: Node) -> Filter:
    """Render a condition AST with the client builder in `bridge.absorb.filters`."""
    match node:
        case And(left, right):
            return to_filter(left) & to_filter(right)
        case Or(left, right):
            return to_filter(left) | to_filter(right)
        case Not(operand):
            return ~to_filter(operand)
        case Compare(op, left, right):
            return getattr(to_operand(left), op)(to_argument(right))  # type: ignore[no-any-return]
        case Call("substringof", (part, subject)):
            return to_operand(subject).contains(to_argument(part))
        case Call("startswith", (subject, part)):
            return to_operand(subject).startswith(to_argument(part))
        case Call("endswith", (subject, part)):
            return to_operand(subject).endswith(to_argument(part))
    raise AssertionError(f"not a condition the strategy makes: {node!r}")


def to_operand(node: Node) -> Operand:
    """A field or tolower/toupper of one, as a builder operand."""
    match node:
        case Field(path):
            return field("/".join(path))
        case Call("tolower", (arg,)):
            return to_operand(arg).lower()
        case Call("toupper", (arg,)):
            return to_operand(arg).upper()
    raise AssertionError(f"not an operand the strategy makes: {node!r}")


def to_argument(node: Node) -> Any:
    """A literal as the Python value the builder takes, or an operand."""
    if isinstance(node, Literal):
        return guid(node.value) if node.kind == "guid" else node.value  # type: ignore[arg-type]
    return to_operand(node)


def normalize(node: Node) -> Node:
    """The AST the parser returns for `node`: GUIDs lowercase text, datetimes aware UTC."""
    match node:
        case Literal(value, "guid"):
            return replace(node, value=str(uuid.UUID(str(value))))
        case Literal(datetime() as value, "datetime"):
            aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
            return replace(node, value=aware.astimezone(UTC))
        case Call(_, args):
            return replace(node, args=tuple(normalize(a) for a in args))
        case Compare(_, left, right):
            return replace(node, left=normalize(left), right=normalize(right))
        case And(left, right) | Or(left, right):
            return replace(node, left=normalize(left), right=normalize(right))
        case Not(operand):
            return replace(node, operand=normalize(operand))
    return node


# --- a reference evaluator, written for clarity rather than speed ----------------------


def reference(node: Node, record: Record) -> bool:
    """Evaluate a (normalized) condition by walking the tree."""
    match node:
        case And(left, right):
            return reference(left, record) and reference(right, record)
        case Or(left, right):
            return reference(left, record) or reference(right, record)
        case Not(operand):
            return not reference(operand, record)
        case Compare(op, left, right):
            return compare(op, value_of(left, record), value_of(right, record))
        case Call(name, (first, second)):
            a: str | None = value_of(first, record)
            b: str | None = value_of(second, record)
            if a is None or b is None:
                return False
            if name == "substringof":
                return a.casefold() in b.casefold()
            if name == "startswith":
                return a.casefold().startswith(b.casefold())
            return a.casefold().endswith(b.casefold())
    raise AssertionError(f"not a condition: {node!r}")


def compare(op: str, a: Any, b: Any) -> bool:
    """Absorb's comparison: None equals only None and is never ordered; text ignores case."""
    if isinstance(a, str) and isinstance(b, str):
        a, b = a.casefold(), b.casefold()
    if op in ("eq", "ne"):
        equal: bool = a == b if a is not None and b is not None else a is None and b is None
        return equal if op == "eq" else not equal
    if a is None or b is None:
        return False
    ordered: dict[str, bool] = {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}
    return ordered[op]


def value_of(node: Node, record: Record) -> Any:
    """An operand's value in canonical form, None when missing."""
    match node:
        case Literal(value):
            return value
        case Field(path):
            return canonical(FIELDS["/".join(path)], record)
        case Call("tolower", (arg,)):
            value = value_of(arg, record)
            return None if value is None else value.lower()
        case Call("toupper", (arg,)):
            value = value_of(arg, record)
            return None if value is None else value.upper()
    raise AssertionError(f"not an operand: {node!r}")


def canonical(spec: FieldSpec, record: Record) -> Any:
    """A record's field value with GUIDs as lowercase text and datetimes aware."""
    value = getattr(record, spec.attr)
    if spec.attr == "extra":
        value = value.get("note") if isinstance(value, dict) else getattr(value, "note", None)
    if value is None:
        return None
    if spec.type == "guid":
        return str(value).lower()
    if spec.type == "datetime" and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The strategy's values or None, as a missing record value."""
    return st.none() | strategy


records = st.builds(
    Record,
    name=maybe(NARROW.strings),
    title=maybe(NARROW.strings),
    id=maybe(NARROW.guids.flatmap(guid_forms)),
    owner_id=maybe(NARROW.guids.flatmap(guid_forms)),
    date_added=maybe(st.builds(in_zone, NARROW.moments, ZONES)),
    date_edited=maybe(st.builds(in_zone, NARROW.moments, ZONES)),
    score=maybe(NARROW.numbers),
    is_active=maybe(st.booleans()),
    extra=maybe(
        st.builds(lambda note: {"note": note}, maybe(NARROW.strings))
        | st.builds(SimpleNamespace, note=maybe(NARROW.strings))
        | st.just({})
    ),
)


# --- the properties ----------------------------------------------------------------


@PROPERTY
@given(conditions(WIDE))
def test_builder_text_parses_back_to_the_ast(node: Node) -> None:
    """Rendering an AST with the client builder and parsing the text gives the AST back."""
    assert parse_filter(str(to_filter(node))) == normalize(node)


@PROPERTY
@given(conditions(NARROW), st.lists(records, min_size=1, max_size=6))
def test_compiled_filter_agrees_with_reference(node: Node, batch: list[Record]) -> None:
    """The compiled predicate gives the reference evaluator's answer on every record."""
    canonical_node = normalize(node)
    predicate = compile_filter(canonical_node, FIELDS)
    for record in batch:
        assert predicate(record) is reference(canonical_node, record)


FILTER_TOKENS = st.sampled_from(
    [" ", "(", ")", ",", "'", "''", "-", "/", "eq", "NE", "gt", "and", "or", "not", "true",
     "null", "name", "extra/note", "score", "1", "2.5", "-3", "'x'", "guid'", "datetime'",
     f"guid'{_GUIDS[0]}'", "datetime'2024-01-31T10:00:00Z'", "startswith(", "tolower(",
     "substringof(", "foo(", "\"", "\\", "é", "\x00"]
)  # fmt: skip


@PROPERTY
@given(st.text() | st.lists(FILTER_TOKENS, max_size=20).map("".join))
def test_any_text_parses_or_raises_filter_error(text: str) -> None:
    """Arbitrary text either parses and compiles or raises FilterError, nothing else."""
    error = filter_error(text)
    assert error is None or 0 <= error.position <= len(text)


def filter_error(text: str) -> FilterError | None:
    """The FilterError that parsing and compiling `text` raises, if any."""
    try:
        compile_filter(parse_filter(text), FIELDS)
    except FilterError as error:
        return error
    return None


@PROPERTY
@given(st.text())
def test_string_literal_round_trips(text: str) -> None:
    """`literal` renders any text, quotes included, so that the parser reads it back exactly."""
    rendered = literal(text)
    assert parse_filter(f"name eq {rendered}") == Compare(
        "eq", Field(("name",)), Literal(text, "string")
    )


SORT_KEYS = st.lists(
    st.tuples(st.sampled_from(sorted(FIELDS)), st.booleans()), min_size=1, max_size=3
)


@PROPERTY
@given(st.lists(records, max_size=20), SORT_KEYS, st.booleans())
def test_compiled_sort_agrees_with_sorted(
    batch: list[Record], keys: list[tuple[str, bool]], shout: bool
) -> None:
    """compile_sort orders records as `sorted` with an equivalent comparison, ties stable."""
    text = sort(
        *(
            ("-" if descending else "") + (name.upper() if shout else name)
            for name, descending in keys
        )
    )

    def order(a: Record, b: Record) -> int:
        for name, descending in keys:
            x, y = sort_value(FIELDS[name], a), sort_value(FIELDS[name], b)
            result = (x > y) - (x < y)
            if result:
                return -result if descending else result
        return 0

    expected = sorted(batch, key=functools.cmp_to_key(order))
    assert [id(r) for r in compile_sort(text, FIELDS)(batch)] == [id(r) for r in expected]


def sort_value(spec: FieldSpec, record: Record) -> tuple[Any, ...]:
    """A comparable stand-in: missing values first, text folded."""
    value = canonical(spec, record)
    if value is None:
        return (0,)
    return (1, value.casefold() if isinstance(value, str) else value)
