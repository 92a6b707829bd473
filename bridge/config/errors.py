"""Config problems: the ConfigError that lists them and the paths that name them."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from bridge.errors import BridgeError

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]


class ConfigError(BridgeError):
    """The config is unusable; `problems` names each one as `<path in the file>: <message>`."""

    def __init__(self, problems: str | list[str], *, path: Path | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.path = path
        super().__init__("\n".join(self.problems))


def _fail(problems: list[Problem]) -> ValidationError:
    """A ValidationError whose errors sit at `loc`s relative to the model raising it."""
    return ValidationError.from_exception_data(
        "config",
        [
            InitErrorDetails(
                type=PydanticCustomError("config", "{message}", {"message": message}),
                loc=loc,
                input=None,
            )
            for loc, message in problems
        ],
    )


def format_path(loc: Loc) -> str:
    """A loc as the path a person finds in the file: `feeds[0].interval`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "(top level)"
