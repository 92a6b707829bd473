"""The parser: `parse_filter` builds the AST from the tokens by recursive descent."""

from __future__ import annotations

import typing  # imported whole because the AST's `Literal` node takes the bare name
from collections.abc import Iterator
from contextlib import contextmanager

from bridge.simulator.odata.grammar import (
    _ARITY,
    _COMPARISON_LIST,
    _COMPARISONS,
    _LITERAL_KINDS,
    _unknown_function,
)
from bridge.simulator.odata.nodes import (
    And,
    Call,
    Compare,
    CompareOp,
    Field,
    FilterError,
    Literal,
    LiteralKind,
    Node,
    Not,
    Or,
)
from bridge.simulator.odata.tokens import _Token, _tokenize

# Deeper nesting (parentheses, `not`, function calls) is refused rather than
# risking Python's recursion limit on hostile input; real filters nest a few levels.
MAX_NESTING = 32


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


def _unexpected(token: _Token, expected: str) -> FilterError:
    if token.kind == "end":
        what = "end of input"
    elif token.kind in _LITERAL_KINDS:
        what = f"{token.kind} literal {token.text}"
    else:
        what = f"'{token.text}'"
    return FilterError(f"unexpected {what}", token.position, hint=f"expected {expected}")
