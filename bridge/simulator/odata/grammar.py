"""The words of the filter language that the tokenizer, the parser and the compiler share."""

from __future__ import annotations

import re
import typing

from bridge.simulator.odata.nodes import CompareOp, FilterError, LiteralKind

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*")
_LITERAL_KINDS: frozenset[str] = frozenset(typing.get_args(LiteralKind))
_COMPARISONS: frozenset[str] = frozenset(typing.get_args(CompareOp))
_ARITY = {"substringof": 2, "startswith": 2, "endswith": 2, "tolower": 1, "toupper": 1}
_FUNCTION_LIST = ", ".join(sorted(_ARITY))
_COMPARISON_LIST = "eq, ne, gt, ge, lt, le"

_GUID_EXAMPLE = "guid'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx'"
_DATETIME_EXAMPLE = "datetime'2024-01-31T10:00:00Z'"


def _unknown_function(name: str, position: int) -> FilterError:
    return FilterError(f"unknown function '{name}'", position, hint=f"expected {_FUNCTION_LIST}")
