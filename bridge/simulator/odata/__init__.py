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

One module per stage: `tokens`, `parser`, `compiler` (building on `predicates`)
and `sorting`; `nodes` holds the AST and FilterError, `grammar` the words the
stages share, and `fields` how API fields are read from records.
"""

from __future__ import annotations

from bridge.simulator.odata.compiler import compile_filter
from bridge.simulator.odata.fields import FieldSpec, Reader
from bridge.simulator.odata.nodes import (
    And,
    Call,
    Compare,
    CompareOp,
    Field,
    FieldType,
    FilterError,
    Literal,
    LiteralKind,
    LiteralValue,
    Node,
    Not,
    Or,
)
from bridge.simulator.odata.parser import MAX_NESTING, parse_filter
from bridge.simulator.odata.predicates import Predicate
from bridge.simulator.odata.sorting import Sorter, T, compile_sort

__all__ = [
    "MAX_NESTING",
    "And",
    "Call",
    "Compare",
    "CompareOp",
    "Field",
    "FieldSpec",
    "FieldType",
    "FilterError",
    "Literal",
    "LiteralKind",
    "LiteralValue",
    "Node",
    "Not",
    "Or",
    "Predicate",
    "Reader",
    "Sorter",
    "T",
    "compile_filter",
    "compile_sort",
    "parse_filter",
]
