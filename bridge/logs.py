"""structlog set-up: JSON lines in a container, readable lines on a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from bridge.redaction import mask

_secrets: list[str] = []


def register_secrets(values: Iterable[str | None]) -> None:
    """Values that must never be logged, whatever field they turn up in (masked as ***)."""
    for value in values:
        if value and len(value) >= 4 and value not in _secrets:
            _secrets.append(value)
    _secrets.sort(key=len, reverse=True)


def mask_secrets(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: replace every registered secret in every string value."""
    if _secrets:
        for key, value in event_dict.items():
            event_dict[key] = _masked(value)
    return event_dict


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value, _secrets)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    if isinstance(value, BaseException):
        return mask(str(value), _secrets)
    return value


def configure(*, level: str = "info", json: bool | None = None) -> None:
    """Configure structlog once for the process; `json=None` picks JSON when stderr is no TTY."""
    use_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
