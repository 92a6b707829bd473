"""Examples for the simulator's `_filter`/`_sort` language and the client's builder of it.

The filter examples come from FACTS.md ("Collections: paging, filtering, sorting")
and from Absorb's own documentation pages.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.absorb.filters import Filter, Guid, field, guid, literal, sort
from bridge.simulator.odata import (
    MAX_NESTING,
    And,
    Call,
    Compare,
    Field,
    FieldSpec,
    FilterError,
    Literal,
    Not,
    Or,
    compile_filter,
    compile_sort,
    parse_filter,
)

JEFFREY_ID = "a14c149a-2ce0-41d4-b532-02189ad3cb22"


@dataclass
class Learner:
    """A record shaped like the simulator's: snake_case attributes, None when missing."""

    id: Any = None
    first_name: str | None = None
    last_name: str | None = None
    date_added: datetime | None = None
    date_edited: datetime | None = None
    status: int | None = None
    score: float | None = None
    is_active: bool | None = None
    custom_fields: Any = None


FIELDS = {
    "id": FieldSpec("id", "guid"),
    "firstName": FieldSpec("first_name", "string"),
    "lastName": FieldSpec("last_name", "string"),
    "dateAdded": FieldSpec("date_added", "datetime"),
    "dateEdited": FieldSpec("date_edited", "datetime"),
    "status": FieldSpec("status", "number"),
    "score": FieldSpec("score", "number"),
    "isActive": FieldSpec("is_active", "boolean"),
    "customFields/string1": FieldSpec("custom_fields", "string"),
    "customFields/decimal1": FieldSpec("custom_fields", "number"),
}


def _f(*path: str) -> Field:
    return Field(path)


def _s(value: str) -> Literal:
    return Literal(value, "string")


def _n(value: int | float) -> Literal:
    return Literal(value, "number")


def matches(text: str, record: Learner) -> bool:
    """Parse, compile and apply one filter to one record."""
    return compile_filter(parse_filter(text), FIELDS)(record)


def select(text: str, records: list[Learner]) -> list[str | None]:
    """The first names of the records a filter keeps."""
    predicate = compile_filter(parse_filter(text), FIELDS)
    return [r.first_name for r in records if predicate(r)]


def error_of(text: str) -> FilterError:
    """The FilterError that parsing and compiling `text` raises."""
    with pytest.raises(FilterError) as caught:
        compile_filter(parse_filter(text), FIELDS)
    return caught.value


# --- parsing: the documented examples ---------------------------------------


def test_absorb_example_string_equality() -> None:
    """Absorb's `firstname eq 'Jeffrey'` parses to a field-to-string comparison."""
    assert parse_filter("firstname eq 'Jeffrey'") == Compare("eq", _f("firstname"), _s("Jeffrey"))


def test_absorb_example_guid_equality() -> None:
    """Absorb's `id eq guid'…'` parses to a GUID literal."""
    assert parse_filter(f"id eq guid'{JEFFREY_ID}'") == Compare(
        "eq", _f("id"), Literal(JEFFREY_ID, "guid")
    )


def test_absorb_example_startswith_or_datetime() -> None:
    """Absorb's camel-cased `startsWith(…) or dateAdded ge datetime'…'` parses as written."""
    node = parse_filter("startsWith(lastname,'leb') or dateAdded ge datetime'1998-03-06T20:38:07Z'")
    assert node == Or(
        Call("startswith", (_f("lastname"), _s("leb"))),
        Compare(
            "ge", _f("dateAdded"), Literal(datetime(1998, 3, 6, 20, 38, 7, tzinfo=UTC), "datetime")
        ),
    )


def test_facts_example_edited_since() -> None:
    """FACTS.md's replacement for modifiedSince, a `dateEdited` bound, parses."""
    assert parse_filter("dateEdited ge datetime'2024-01-31T10:00:00Z'") == Compare(
        "ge", _f("dateEdited"), Literal(datetime(2024, 1, 31, 10, tzinfo=UTC), "datetime")
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-31T10:00:00Z", datetime(2024, 1, 31, 10, tzinfo=UTC)),
        ("2024-01-31T10:00:00", datetime(2024, 1, 31, 10, tzinfo=UTC)),
        ("2024-01-31T10:00:00.1234567Z", datetime(2024, 1, 31, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-01-31T10:00:00.5", datetime(2024, 1, 31, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2024-01-31T12:00:00+02:00", datetime(2024, 1, 31, 10, tzinfo=UTC)),
    ],
)
def test_datetime_literal_forms(text: str, expected: datetime) -> None:
    """Datetime literals take .NET's seven digits and a missing `Z`, and read as UTC."""
    node = parse_filter(f"dateEdited eq datetime'{text}'")
    assert isinstance(node, Compare)
    assert node.right == Literal(expected, "datetime")


def test_guid_literal_is_lowercased() -> None:
    """GUID literals are normalized to lowercase text."""
    node = parse_filter(f"id eq GUID'{JEFFREY_ID.upper()}'")
    assert node == Compare("eq", _f("id"), Literal(JEFFREY_ID, "guid"))


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3), ("-3", -3), ("2.5", 2.5), ("-0.25", -0.25), ("0", 0), ("10.0", 10.0)],
)
def test_number_literals(text: str, value: int | float) -> None:
    """Integers stay int and decimals become float, with an optional leading minus."""
    node = parse_filter(f"score eq {text}")
    assert isinstance(node, Compare)
    assert isinstance(node.right, Literal)
    assert node.right.value == value
    assert type(node.right.value) is type(value)


@pytest.mark.parametrize(
    ("text", "literal_node"),
    [
        ("true", Literal(True, "boolean")),
        ("FALSE", Literal(False, "boolean")),
        ("Null", Literal(None, "null")),
    ],
)
def test_keyword_literals(text: str, literal_node: Literal) -> None:
    """`true`, `false` and `null` are literals in any letter case."""
    assert parse_filter(f"isActive eq {text}") == Compare("eq", _f("isActive"), literal_node)


@pytest.mark.parametrize(
    ("text", "value"),
    [("'it''s'", "it's"), ("''''", "'"), ("''", ""), ("'a''''b'", "a''b"), ("'ü €'", "ü €")],
)
def test_string_escaping(text: str, value: str) -> None:
    """Inside a string literal `''` stands for one quote."""
    assert parse_filter(f"firstName eq {text}") == Compare("eq", _f("firstName"), _s(value))


def test_keywords_and_functions_ignore_case() -> None:
    """Operators, `not` and function names are case-insensitive; field names keep their text."""
    node = parse_filter("FirstName EQ 'x' AND NOT EndsWith(lastName,'y') Or status Ne 3")
    assert node == Or(
        And(
            Compare("eq", _f("FirstName"), _s("x")),
            Not(Call("endswith", (_f("lastName"), _s("y")))),
        ),
        Compare("ne", _f("status"), _n(3)),
    )


def test_whitespace_is_optional_between_tokens_and_allowed_anywhere() -> None:
    """Tokens need no spaces around punctuation and take any amount of whitespace."""
    tight = parse_filter("(status eq 1)and(startswith(firstName,'a'))")
    loose = parse_filter("  ( status\teq 1 )\n and ( startswith ( firstName , 'a' ) )  ")
    expected = And(
        Compare("eq", _f("status"), _n(1)), Call("startswith", (_f("firstName"), _s("a")))
    )
    assert tight == expected
    assert loose == expected


def test_nested_field_path() -> None:
    """`a/b` is one field with a two-segment path."""
    assert parse_filter("customFields/string1 eq 'x'") == Compare(
        "eq", _f("customFields", "string1"), _s("x")
    )


def test_boolean_function_compared_with_true() -> None:
    """A boolean function may be compared with `eq true` as well as stand alone."""
    assert parse_filter("substringof('ef',firstName) eq true") == Compare(
        "eq", Call("substringof", (_s("ef"), _f("firstName"))), Literal(True, "boolean")
    )


def test_string_functions_nest() -> None:
    """`tolower`/`toupper` results can be compared and passed to other functions."""
    assert parse_filter("startswith(toupper(lastName),tolower('AB'))") == Call(
        "startswith", (Call("toupper", (_f("lastName"),)), Call("tolower", (_s("AB"),)))
    )


# --- parsing: precedence -------------------------------------------------------

_A = Compare("eq", _f("a"), _n(1))
_B = Compare("eq", _f("b"), _n(2))
_C = Compare("eq", _f("c"), _n(3))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a eq 1 or b eq 2 and c eq 3", Or(_A, And(_B, _C))),
        ("a eq 1 and b eq 2 or c eq 3", Or(And(_A, _B), _C)),
        ("(a eq 1 or b eq 2) and c eq 3", And(Or(_A, _B), _C)),
        ("a eq 1 and b eq 2 and c eq 3", And(And(_A, _B), _C)),
        ("a eq 1 or b eq 2 or c eq 3", Or(Or(_A, _B), _C)),
        ("a eq 1 and (b eq 2 and c eq 3)", And(_A, And(_B, _C))),
        ("not a eq 1", Not(_A)),
        ("not a eq 1 and b eq 2", And(Not(_A), _B)),
        ("not (a eq 1 and b eq 2)", Not(And(_A, _B))),
        ("not not a eq 1", Not(Not(_A))),
        ("a eq 1 or not b eq 2", Or(_A, Not(_B))),
        ("((a eq 1))", _A),
    ],
)
def test_precedence(text: str, expected: object) -> None:
    """`or` binds loosest, then `and`, then `not`, then comparisons; `and`/`or` go left to right."""
    assert parse_filter(text) == expected


# --- parsing: errors and their positions ----------------------------------------


def test_error_message_names_problem_position_and_expectation() -> None:
    """A syntax error's message says what is wrong, where, and what would fit."""
    with pytest.raises(FilterError) as caught:
        parse_filter("firstName   foo 'x'")
    assert str(caught.value) == (
        "_filter: unexpected 'foo' at position 12; expected eq, ne, gt, ge, lt, le"
    )
    assert caught.value.position == 12
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("", 0, "empty"),
        ("   ", 0, "empty"),
        ("firstName eq 'abc", 13, "unterminated string"),
        ("firstName eq 'it''s", 13, "unterminated string"),
        ("id eq guid'not-a-guid'", 6, "invalid GUID"),
        ("id eq guid'a14c149a2ce041d4b53202189ad3cb22'", 6, "invalid GUID"),
        ("id eq guid'a14c149a", 10, "unterminated string"),
        ("dateEdited ge datetime'yesterday'", 14, "invalid datetime"),
        ("dateEdited ge datetime'2024-02-30T00:00:00Z'", 14, "invalid datetime"),
        ("dateEdited ge datetime'0001-01-01T00:00:00+01:00'", 14, "invalid datetime"),
        ("foo(firstName) eq 'x'", 0, "unknown function 'foo'"),
        ("status eq 1 or length(firstName) eq 3", 15, "unknown function 'length'"),
        ("startswith(firstName)", 0, "startswith() takes 2 arguments, got 1"),
        ("tolower(firstName, lastName) eq 'x'", 0, "tolower() takes 1 argument, got 2"),
        ("tolower() eq 'x'", 0, "tolower() takes 1 argument, got 0"),
        ("startswith(firstName 'x')", 21, "expected ',' or ')'"),
        ("status eq 3 status", 12, "expected and, or, or end of input"),
        ("status eq 1 eq 2", 12, "unexpected 'eq'"),
        ("status eq 3)", 11, "unmatched ')'"),
        ("(status eq 3", 0, "unclosed '('"),
        ("status eq 1 and (status eq 3", 16, "unclosed '('"),
        ("(status eq 3 status", 13, "expected ')', and, or"),
        ("status eq", 9, "unexpected end of input"),
        ("status eq 3 and", 15, "unexpected end of input"),
        ("status eq eq 3", 10, "unexpected 'eq'"),
        ("and status eq 3", 0, "unexpected 'and'"),
        ("status eq 3 and or status eq 4", 16, "unexpected 'or'"),
        ("status @ 3", 7, "unexpected character '@'"),
        ('firstName eq "x"', 13, "single quotes"),
        ("status eq - 3", 10, "unexpected character '-'"),
        ("customFields/ eq 'x'", 12, "unexpected character '/'"),
        ("()", 1, "unexpected ')'"),
        ("status eq 3,", 11, "unexpected ','"),
        pytest.param("status eq " + "9" * 5000, 10, "number literal too long", id="huge-int"),
    ],
)
def test_syntax_errors_carry_position(text: str, position: int, fragment: str) -> None:
    """Every syntax error raises FilterError pointing at the offending character."""
    with pytest.raises(FilterError) as caught:
        parse_filter(text)
    assert caught.value.position == position
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("_filter: ")


def test_nesting_limit() -> None:
    """Nesting past MAX_NESTING is refused with FilterError rather than exhausting the stack."""
    fine = "(" * MAX_NESTING + "status eq 1" + ")" * MAX_NESTING
    assert parse_filter(fine) == Compare("eq", _f("status"), _n(1))
    for deep in ("(" * 5000 + "status eq 1", "not " * 5000 + "isActive", "tolower(" * 5000):
        with pytest.raises(FilterError, match="nesting deeper"):
            parse_filter(deep)


def test_long_or_chain_compiles_and_runs() -> None:
    """A chain of thousands of `or` terms neither hits the recursion limit nor misbehaves."""
    text = " or ".join(f"status eq {n}" for n in range(3000))
    predicate = compile_filter(parse_filter(text), FIELDS)
    assert predicate(Learner(status=2999))
    assert not predicate(Learner(status=3000))


# --- compiling: fields and types ------------------------------------------------


def test_unknown_field() -> None:
    """An unknown field is named, with its position, and nothing more is disclosed."""
    error = error_of("status eq 1 and salary gt 3")
    assert str(error) == "_filter: unknown or non-filterable field 'salary' at position 16"


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        (f"id eq '{JEFFREY_ID}'", 6, "use guid'"),
        ("dateEdited ge '2024-01-01'", 14, "use datetime'"),
        ("dateEdited ge 20240101", 14, "use datetime'"),
        ("status eq '3'", 10, "without quotes"),
        ("isActive eq 'true'", 12, "true or false"),
        ("firstName eq 3", 13, "quote text"),
        ("'3' eq status", 7, "cannot compare a string literal with number field 'status'"),
        ("firstName eq dateEdited", 13, "with datetime field 'dateEdited'"),
        ("status gt null", 7, "null can only be compared with eq or ne"),
        ("isActive gt true", 9, "'gt' does not apply to boolean values"),
        (f"id lt guid'{JEFFREY_ID}'", 3, "'lt' does not apply to guid values"),
        ("startswith(status,'3')", 11, "startswith() takes text, not number field 'status'"),
        ("substringof(3,firstName)", 12, "substringof() takes text, not a number literal"),
        ("tolower(id) eq 'x'", 8, "tolower() takes text"),
        ("firstName", 0, "string field 'firstName' is not a condition"),
        ("status eq 3 and tolower(firstName)", 16, "is not a condition"),
        ("not 'x'", 4, "a string literal is not a condition"),
        ("null", 0, "a null literal is not a condition"),
        ("startswith(firstName,'a') eq 1", 29, "cannot compare the boolean result"),
    ],
)
def test_type_errors(text: str, position: int, fragment: str) -> None:
    """Literals must fit the field's type; the message points at the culprit and hints."""
    error = error_of(text)
    assert error.position == position
    assert fragment in str(error)


def test_field_names_ignore_case() -> None:
    """Field names resolve case-insensitively, nested paths included."""
    record = Learner(first_name="Ann", custom_fields={"string1": "x"})
    assert matches("FIRSTNAME eq 'Ann'", record)
    assert matches("CustomFields/STRING1 eq 'x'", record)


def test_hand_built_ast_errors_have_no_position() -> None:
    """Errors in ASTs built without text report position -1 and omit "at position"."""
    with pytest.raises(FilterError) as caught:
        compile_filter(Call("length", (_f("firstName"),)), FIELDS)
    assert caught.value.position == -1
    assert str(caught.value) == (
        "_filter: unknown function 'length'; "
        "expected endswith, startswith, substringof, tolower, toupper"
    )
    with pytest.raises(FilterError, match="takes 2 arguments, got 1"):
        compile_filter(Call("endswith", (_f("firstName"),)), FIELDS)


# --- compiling: semantics -------------------------------------------------------


def test_string_comparisons_ignore_case() -> None:
    """eq, ne, ordering and the string functions ignore case, like SQL Server's collation."""
    people = [Learner(first_name=n) for n in ("Jeffrey", "apple", "Banana", "cherry")]
    assert select("firstname eq 'JEFFREY'", people) == ["Jeffrey"]
    assert select("firstName ne 'jeffrey'", people) == ["apple", "Banana", "cherry"]
    assert select("firstName gt 'b'", people) == ["Jeffrey", "Banana", "cherry"]
    assert select("firstName lt 'BANANA'", people) == ["apple"]
    assert select("startswith(firstName,'JEF')", people) == ["Jeffrey"]
    assert select("endswith(firstName,'Y')", people) == ["Jeffrey", "cherry"]
    assert select("substringof('AN',firstName)", people) == ["Banana"]
    assert select("toupper(firstName) eq 'apple'", people) == ["apple"]


def test_substringof_argument_order() -> None:
    """`substringof(needle, haystack)`: the first argument is looked for in the second."""
    record = Learner(first_name="Jeffrey", last_name="Jeff")
    assert matches("substringof(lastName,firstName)", record)
    assert not matches("substringof(firstName,lastName)", record)


def test_guid_comparison_ignores_case_and_accepts_uuid_values() -> None:
    """GUID fields match whether the record holds a UUID or text in either case."""
    text = f"id eq guid'{JEFFREY_ID.upper()}'"
    for value in (uuid.UUID(JEFFREY_ID), JEFFREY_ID, JEFFREY_ID.upper()):
        assert matches(text, Learner(id=value))
    assert not matches(text, Learner(id=uuid.uuid4()))
    assert matches(f"id ne guid'{JEFFREY_ID}'", Learner(id=uuid.uuid4()))


def test_datetime_comparisons() -> None:
    """Datetime bounds are exact to the microsecond, and naive record values mean UTC."""
    edited = datetime(2024, 1, 31, 10, 0, 0, 123456, tzinfo=UTC)
    record = Learner(date_edited=edited)
    assert matches("dateEdited ge datetime'2024-01-31T10:00:00.1234560Z'", record)
    assert matches("dateEdited le datetime'2024-01-31T10:00:00.123456'", record)
    assert not matches("dateEdited gt datetime'2024-01-31T10:00:00.123456Z'", record)
    assert matches("dateEdited eq datetime'2024-01-31T11:00:00.123456+01:00'", record)
    naive = Learner(date_edited=edited.replace(tzinfo=None))
    assert matches("dateEdited eq datetime'2024-01-31T10:00:00.123456Z'", naive)
    other_zone = Learner(date_edited=edited.astimezone(timezone(timedelta(hours=-5))))
    assert matches("dateEdited eq datetime'2024-01-31T10:00:00.123456Z'", other_zone)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("score eq null", True),
        ("null eq score", True),
        ("score ne null", False),
        ("score eq 3", False),
        ("score ne 3", True),
        ("score gt 3", False),
        ("score le 3", False),
        ("3 ge score", False),
        ("not score gt 3", True),
        ("firstName eq 'x'", False),
        ("firstName ne 'x'", True),
        ("firstName lt 'x'", False),
        ("startswith(firstName,'')", False),
        ("endswith(firstName,'x')", False),
        ("substringof('x',firstName)", False),
        ("substringof(firstName,'x')", False),
        ("tolower(firstName) eq null", True),
        ("id eq null", True),
        ("dateEdited lt datetime'2024-01-01T00:00:00Z'", False),
        ("isActive", False),
        ("not isActive", True),
        ("isActive eq false", False),
        ("isActive eq null", True),
        ("firstName eq lastName", True),
        ("firstName ge lastName", False),
        ("customFields/string1 eq null", True),
        ("null eq null", True),
        ("null ne null", False),
    ],
)
def test_missing_values(text: str, expected: bool) -> None:
    """A None value equals only null; ordering and string functions on it are false."""
    assert matches(text, Learner()) is expected


def test_missing_value_against_present_one() -> None:
    """Field-to-field: None is unequal to a present value and never ordered against it."""
    record = Learner(first_name="Ann")
    assert not matches("firstName eq lastName", record)
    assert matches("firstName ne lastName", record)
    assert not matches("firstName gt lastName", record)
    assert not matches("lastName lt firstName", record)


def test_field_to_field_comparison() -> None:
    """Fields of the same type compare with each other, text ignoring case."""
    record = Learner(
        first_name="Ann",
        last_name="ANN",
        date_added=datetime(2024, 1, 1, tzinfo=UTC),
        date_edited=datetime(2024, 2, 1, tzinfo=UTC),
    )
    assert matches("firstName eq lastName", record)
    assert matches("dateAdded lt dateEdited", record)
    assert not matches("dateAdded ge dateEdited", record)


def test_literal_on_the_left() -> None:
    """A literal on the left compares as the mirrored comparison."""
    record = Learner(status=3)
    assert matches("2 lt status", record)
    assert matches("3 ge status", record)
    assert not matches("3 gt status", record)
    assert matches("'x' eq 'X'", record)


def test_numbers_mix_int_and_float() -> None:
    """Integer and decimal literals compare numerically with either kind of value."""
    assert matches("score eq 2", Learner(score=2.0))
    assert matches("score gt -0.5", Learner(score=0))
    assert matches("status lt 2.5", Learner(status=2))


def test_boolean_fields() -> None:
    """A boolean field stands alone as a condition or compares with true/false."""
    active, inactive = Learner(is_active=True), Learner(is_active=False)
    assert matches("isActive", active)
    assert not matches("isActive", inactive)
    assert matches("not isActive", inactive)
    assert matches("isActive eq false", inactive)
    assert matches("isActive ne false", active)
    assert matches("true", inactive)
    assert not matches("false", active)


def test_boolean_functions_compared_with_booleans() -> None:
    """`startswith(…) eq true` and `… eq false` mean the function result and its negation."""
    record = Learner(first_name="Jeffrey")
    assert matches("startswith(firstName,'j') eq true", record)
    assert matches("startswith(firstName,'x') eq false", record)
    assert matches("(status eq 3) eq false", record)


def test_logic() -> None:
    """`and`, `or` and `not` combine conditions as expected, with two-valued logic."""
    people = [
        Learner(first_name="a", status=1, is_active=True),
        Learner(first_name="b", status=2, is_active=False),
        Learner(first_name="c", status=3, is_active=True),
        Learner(first_name="d", status=None, is_active=None),
    ]
    assert select("status eq 1 or status eq 3", people) == ["a", "c"]
    assert select("isActive and status gt 1", people) == ["c"]
    assert select("not (status eq 1 or status eq 3)", people) == ["b", "d"]
    assert select("status ge 1 and status le 3 and not isActive", people) == ["b"]


def test_nested_fields_read_dicts_and_attributes() -> None:
    """Nested paths read dict keys or attributes past the first segment; absent means null."""
    in_dict = Learner(custom_fields={"string1": "Blue", "decimal1": 2.5})
    in_object = Learner(custom_fields=SimpleNamespace(string1="blue", decimal1=1))
    absent = [Learner(custom_fields={}), Learner(custom_fields=None), Learner()]
    for record in (in_dict, in_object):
        assert matches("customFields/string1 eq 'BLUE'", record)
    assert matches("customFields/decimal1 gt 2", in_dict)
    assert not matches("customFields/decimal1 gt 2", in_object)
    for record in absent:
        assert matches("customFields/string1 eq null", record)
        assert not matches("startswith(customFields/string1,'b')", record)


def test_date_filter_over_many_records() -> None:
    """A `dateEdited ge datetime'…'` filter keeps exactly the records at or after the bound."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    records = [Learner(date_edited=start + timedelta(minutes=i)) for i in range(50_000)]
    predicate = compile_filter(parse_filter("dateEdited ge datetime'2024-01-20T00:00:00Z'"), FIELDS)
    kept = [r for r in records if predicate(r)]
    assert len(kept) == 50_000 - 19 * 24 * 60
    assert kept[0].date_edited == datetime(2024, 1, 20, tzinfo=UTC)


# --- sorting --------------------------------------------------------------------


def _names(records: list[Learner]) -> list[str | None]:
    return [r.first_name for r in records]


def test_sort_single_key_both_directions() -> None:
    """One key sorts ascending, or descending with `-`."""
    people = [Learner(first_name=n, status=s) for n, s in (("a", 2), ("b", 3), ("c", 1))]
    assert _names(compile_sort("status", FIELDS)(people)) == ["c", "a", "b"]
    assert _names(compile_sort("-status", FIELDS)(people)) == ["b", "a", "c"]


def test_sort_multiple_keys_is_stable() -> None:
    """Later keys break ties of earlier ones; full ties keep the input order."""
    rows = [("a", 1, 5), ("b", 2, 5), ("c", 1, 7), ("d", 2, 5), ("e", 1, 5)]
    people = [Learner(first_name=n, status=s, score=x) for n, s, x in rows]
    assert _names(compile_sort("status,-score", FIELDS)(people)) == ["c", "a", "e", "b", "d"]
    assert _names(compile_sort("-status, score", FIELDS)(people)) == ["b", "d", "a", "e", "c"]


def test_sort_text_ignores_case_in_names_and_values() -> None:
    """Sort field names and text values both ignore case."""
    people = [Learner(first_name=n) for n in ("b", "A", "a", "C")]
    assert _names(compile_sort("FirstName", FIELDS)(people)) == ["A", "a", "b", "C"]


def test_sort_missing_values_first_ascending_last_descending() -> None:
    """None sorts before every value ascending and after every value descending."""
    people = [Learner(first_name=n, score=s) for n, s in (("x", 2), ("y", None), ("z", 1))]
    assert _names(compile_sort("score", FIELDS)(people)) == ["y", "z", "x"]
    assert _names(compile_sort("-score", FIELDS)(people)) == ["x", "z", "y"]


def test_sort_nested_and_datetime_fields() -> None:
    """Nested fields and datetimes (naive meaning UTC) sort by value."""
    base = datetime(2024, 1, 1, tzinfo=UTC)
    people = [
        Learner(first_name="late", date_edited=base + timedelta(hours=1)),
        Learner(first_name="early", date_edited=(base - timedelta(hours=1)).replace(tzinfo=None)),
        Learner(first_name="mid", date_edited=base.astimezone(timezone(timedelta(hours=3)))),
    ]
    assert _names(compile_sort("dateEdited", FIELDS)(people)) == ["early", "mid", "late"]
    tagged = [Learner(first_name=n, custom_fields={"decimal1": v}) for n, v in (("p", 2), ("q", 1))]
    assert _names(compile_sort("customFields/decimal1", FIELDS)(tagged)) == ["q", "p"]


def test_sort_returns_a_new_list_and_empty_text_keeps_order() -> None:
    """The input is left alone; an empty `_sort` keeps the records' order."""
    people = [Learner(first_name=n) for n in ("b", "a")]
    assert _names(compile_sort("firstName", FIELDS)(people)) == ["a", "b"]
    assert _names(people) == ["b", "a"]
    assert _names(compile_sort(" ", FIELDS)(iter(people))) == ["b", "a"]


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("salary", 0, "unknown or non-sortable field 'salary'"),
        ("firstName, -salary", 12, "unknown or non-sortable field 'salary'"),
        ("firstName,,status", 10, "invalid sort entry ''"),
        ("-", 0, "invalid sort entry '-'"),
        ("first name", 0, "invalid sort entry 'first name'"),
        ("--status", 0, "invalid sort entry '--status'"),
    ],
)
def test_sort_errors(text: str, position: int, fragment: str) -> None:
    """Bad `_sort` entries raise FilterError for `_sort` with the entry's position."""
    with pytest.raises(FilterError) as caught:
        compile_sort(text, FIELDS)
    assert caught.value.position == position
    assert str(caught.value).startswith("_sort: ")
    assert fragment in str(caught.value)


# --- the client builder ----------------------------------------------------------


class _Status(enum.IntEnum):
    COMPLETE = 3


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("Jeffrey", "'Jeffrey'"),
        ("it's", "'it''s'"),
        ("", "''"),
        (guid(JEFFREY_ID.upper()), f"guid'{JEFFREY_ID}'"),
        (uuid.UUID(JEFFREY_ID), f"guid'{JEFFREY_ID}'"),
        (JEFFREY_ID, f"'{JEFFREY_ID}'"),
        (
            datetime(2024, 1, 31, 10, 0, 0, 123456, tzinfo=UTC),
            "datetime'2024-01-31T10:00:00.1234560Z'",
        ),
        (datetime(2024, 1, 31, 10), "datetime'2024-01-31T10:00:00.0000000Z'"),
        (
            datetime(2024, 1, 31, 12, tzinfo=timezone(timedelta(hours=2))),
            "datetime'2024-01-31T10:00:00.0000000Z'",
        ),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-42, "-42"),
        (_Status.COMPLETE, "3"),
        (2.5, "2.5"),
        (3.0, "3.0"),
        (1e20, "100000000000000000000.0"),
        (1e-7, "0.0000001"),
        (None, "null"),
    ],
)
def test_literal_rendering(value: Any, text: str) -> None:
    """Python values render as the matching OData literals."""
    assert literal(value) == text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_literal_rejects_non_finite_numbers(value: float) -> None:
    """NaN and infinities have no OData literal."""
    with pytest.raises(ValueError, match="no literal"):
        literal(value)


def test_literal_rejects_other_types() -> None:
    """Values of other types are a TypeError, not silently stringified."""
    with pytest.raises(TypeError):
        literal(b"bytes")  # type: ignore[arg-type]


def test_guid_validates_and_normalizes() -> None:
    """`guid()` keeps the canonical lowercase form and rejects anything else."""
    assert guid("{" + JEFFREY_ID.upper() + "}") == JEFFREY_ID
    assert isinstance(guid(uuid.UUID(JEFFREY_ID)), Guid)
    with pytest.raises(ValueError, match="badly formed"):
        guid("not-a-guid")


def test_builder_comparisons_and_functions() -> None:
    """Field methods render comparisons and string functions, fields on either side."""
    name = field("firstName")
    assert str(name.eq("Jeffrey")) == "firstName eq 'Jeffrey'"
    assert str(field("id").eq(guid(JEFFREY_ID))) == f"id eq guid'{JEFFREY_ID}'"
    assert str(name.ne(None)) == "firstName ne null"
    assert str(field("dateAdded").le(field("dateEdited"))) == "dateAdded le dateEdited"
    assert str(name.startswith("leb")) == "startswith(firstName,'leb')"
    assert str(name.endswith("o'")) == "endswith(firstName,'o''')"
    assert str(name.contains("ef")) == "substringof('ef',firstName)"
    assert str(name.lower().eq("x")) == "tolower(firstName) eq 'x'"
    assert str(name.upper().startswith(field("lastName").upper())) == (
        "startswith(toupper(firstName),toupper(lastName))"
    )
    assert str(field("customFields/string1").gt("m")) == "customFields/string1 gt 'm'"


def test_builder_combinations_parenthesize_compound_operands() -> None:
    """`&`, `|` and `~` keep the Python grouping, whatever OData's precedence."""
    a, b, c = (field(n).eq(1) for n in ("a", "b", "c"))
    assert str(a & b) == "a eq 1 and b eq 1"
    assert str(a | b & c) == "a eq 1 or (b eq 1 and c eq 1)"
    assert str((a | b) & c) == "(a eq 1 or b eq 1) and c eq 1"
    assert str(~a) == "not (a eq 1)"
    assert str(~(a | b) & c) == "not (a eq 1 or b eq 1) and c eq 1"
    assert str(Filter("raw eq 1 or x eq 2") & a) == "(raw eq 1 or x eq 2) and a eq 1"
    assert parse_filter(str((a | b) & ~c)) == And(
        Or(Compare("eq", _f("a"), _n(1)), Compare("eq", _f("b"), _n(1))),
        Not(Compare("eq", _f("c"), _n(1))),
    )


def test_builder_output_parses_and_filters() -> None:
    """The builder's text, parsed and compiled by the simulator, selects what it says."""
    since = datetime(2024, 1, 31, 10, tzinfo=UTC)
    wanted = field("dateEdited").ge(since) & ~field("status").eq(_Status.COMPLETE)
    predicate = compile_filter(parse_filter(str(wanted)), FIELDS)
    assert predicate(Learner(date_edited=since, status=1))
    assert not predicate(Learner(date_edited=since, status=3))
    assert not predicate(Learner(date_edited=since - timedelta(microseconds=1), status=1))


def test_filter_has_no_truth_value() -> None:
    """Using `and`/`or` keywords on filters fails loudly instead of dropping a condition."""
    with pytest.raises(TypeError, match=r"&, \| and ~"):
        bool(field("a").eq(1))


@pytest.mark.parametrize("name", ["", "1abc", "a b", "a/", "/a", "a//b", "a-b", "é", "not", "NULL"])
def test_builder_rejects_bad_field_names(name: str) -> None:
    """Field names must be identifiers (nested with `/`) and not filter keywords."""
    with pytest.raises(ValueError, match="invalid field name"):
        field(name)


def test_builder_rejects_ordering_against_null() -> None:
    """Only eq and ne can compare with null."""
    with pytest.raises(ValueError, match="null"):
        field("score").gt(None)


def test_sort_builder() -> None:
    """`sort()` joins validated names, `-` marking descending."""
    assert sort("name", "-dateEdited", "customFields/string1") == (
        "name,-dateEdited,customFields/string1"
    )
    with pytest.raises(ValueError, match="at least one field"):
        sort()
    with pytest.raises(ValueError, match="invalid field name"):
        sort("--name")
    with pytest.raises(ValueError, match="invalid field name"):
        sort("name,id")
