"""Reading what the file says: YAML (noting duplicate keys), `${NAME}`, `*_file` secrets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bridge.config.credentials import _FileProblem
from bridge.config.errors import ConfigError, Loc, Problem


def _read_secret_file(key: str, path: Any) -> str | list[str] | _FileProblem:
    file_key = f"{key}_file"
    if not isinstance(path, str) or not path:
        return _FileProblem(file_key, "must be the path of a file holding the secret")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        return _FileProblem(file_key, f"cannot read {path}: {reason}")
    if key == "secrets":  # one secret a line, for rotation
        return [line.strip() for line in text.splitlines() if line.strip()]
    return text.removesuffix("\n").removesuffix("\r")


_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _substitute(value: Any, env: Mapping[str, str], loc: Loc, problems: list[Problem]) -> Any:
    """Every string in the tree with `${NAME}` replaced from `env` and `$${` made `${`."""
    if isinstance(value, dict):
        return {k: _substitute(v, env, (*loc, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, (*loc, i), problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(m: re.Match[str]) -> str:
        whole, name = m.group(0), m.group(1)
        if whole == "$${":
            return "${"
        if name is None:
            problems.append((loc, "unterminated ${ (write $${ for a literal ${)"))
        elif not _VAR_NAME.fullmatch(name):
            problems.append(
                (loc, f"${{{name}}} is not a variable: use ${{NAME}} (letters, digits, _)")
            )
        elif name not in env:
            problems.append((loc, f"environment variable {name} is not set"))
        else:
            return env[name]
        return whole

    return _REFERENCE.sub(replace, value)


class _Loader(yaml.SafeLoader):
    """A safe loader that notes duplicate keys instead of keeping the last one silently."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            if key_node.value in seen:
                mark = key_node.start_mark
                self.duplicates.append(
                    f"line {mark.line + 1}, column {mark.column + 1}:"
                    f" duplicate key {key_node.value!r}"
                )
            seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text: str) -> tuple[Any, list[str]]:
    loader = _Loader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    except yaml.MarkedYAMLError as e:
        # Built from the parts, not str(e): that quotes the offending line, secrets and all.
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        what = e.problem or e.context or "not valid YAML"
        raise ConfigError([f"{where}: {what}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"YAML: {type(e).__name__}"]) from None
    finally:
        loader.dispose()
