"""The tokenizer: cuts a `_filter` text into tokens, reading quoted and typed literals."""

from __future__ import annotations

import re
from typing import NamedTuple

from bridge.absorb.timefmt import parse_datetime
from bridge.simulator.odata.grammar import _COMPARISONS, _DATETIME_EXAMPLE, _GUID_EXAMPLE, _NAME
from bridge.simulator.odata.nodes import FilterError, LiteralKind, LiteralValue

_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_WHITESPACE = re.compile(r"\s+")
_GUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_KEYWORDS = _COMPARISONS | {"and", "or", "not"}
_KEYWORD_LITERALS: dict[str, tuple[LiteralKind, bool | None]] = {
    "true": ("boolean", True),
    "false": ("boolean", False),
    "null": ("null", None),
}
_TYPED_QUOTES = ("guid", "datetime")


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
