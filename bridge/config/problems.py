"""Pydantic's validation errors as problems a person can act on, in the file's order."""

from __future__ import annotations

import difflib
from typing import Any, get_args

from pydantic_core import ErrorDetails

from bridge.config.base import _Model
from bridge.config.errors import Loc, Problem
from bridge.config.models import Config
from bridge.config.sinks import SINK_TYPES


def _models_in(annotation: Any) -> list[type[_Model]]:
    if isinstance(annotation, type) and issubclass(annotation, _Model):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _model_at(loc: Loc) -> type[_Model] | None:
    """The model that validates the mapping at `loc` (pydantic's loc, union tags included)."""
    candidates: list[type[_Model]] = [Config]
    for part in loc:
        if isinstance(part, int):
            continue
        if part in SINK_TYPES and SINK_TYPES[part] in candidates:
            candidates = [SINK_TYPES[part]]
            continue
        candidates = [
            model
            for candidate in candidates
            for name, field in candidate.model_fields.items()
            if (field.alias or name) == part
            for model in _models_in(field.annotation)
        ]
    return candidates[0] if len(candidates) == 1 else None


def _keys(model: type[_Model]) -> list[str]:
    keys = [field.alias or name for name, field in model.model_fields.items()]
    return keys + [f"{key}_file" for key in model.secret_keys]


def _message(error: ErrorDetails) -> str:
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx", {})
    if kind == "missing":
        model = _model_at(loc[:-1])
        if model is not None and loc[-1] in model.secret_keys:
            return f"required (or {loc[-1]}_file: a file holding it)"
        return "required"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        keys = _keys(model) if model else []
        close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(keys)}"
        return f"unknown key ({hint})"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", error["msg"]))
    simple = {
        "model_type": "must be a mapping (key: value)",
        "model_attributes_type": "must be a mapping (key: value)",
        "dict_type": "must be a mapping (key: value)",
        "list_type": "must be a list",
        "string_type": "must be a string",
        "int_type": "must be a whole number",
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "finite_number": "must be a finite number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "path_type": "must be a file path",
    }
    if kind in simple:
        return simple[kind]
    if kind in ("too_short", "string_too_short") and ctx.get("min_length") == 1:
        return "must not be empty"
    bounds = {
        "greater_than": ("gt", "greater than"),
        "greater_than_equal": ("ge", "at least"),
        "less_than": ("lt", "less than"),
        "less_than_equal": ("le", "at most"),
    }
    if kind in bounds:
        key, words = bounds[kind]
        return f"must be {words} {ctx[key]}"
    if kind == "literal_error":
        return f"must be {ctx['expected']}"
    msg = str(error["msg"])
    return msg[:1].lower() + msg[1:]


def _problem(error: ErrorDetails) -> Problem:
    loc: Loc = tuple(error["loc"])
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "union_tag_invalid":
        return (*loc, "type"), f"unknown sink type {ctx['tag']!r} (types: {', '.join(SINK_TYPES)})"
    if kind == "union_tag_not_found":
        return (*loc, "type"), f"required: the kind of sink ({', '.join(SINK_TYPES)})"
    message = _message(error)
    if kind == "secret_file":
        loc = (*loc[:-1], ctx["key"])
    # The discriminated union puts the sink's type into the loc; it is not in the file.
    if loc[:1] == ("sinks",) and len(loc) > 2 and loc[2] in SINK_TYPES:
        loc = loc[:2] + loc[3:]
    return loc, message


_SECTIONS = ("absorb", "redis", "feeds", "sinks", "routes", "http", "console")


def _file_order(problem: Problem) -> tuple[int, int]:
    loc = problem[0]
    section = _SECTIONS.index(loc[0]) if loc and loc[0] in _SECTIONS else len(_SECTIONS)
    index = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else -1
    return section, index
