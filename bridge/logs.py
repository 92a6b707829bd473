"""structlog set-up: JSON lines in a container, readable lines on a terminal.

The bridge's own events and every library's stdlib logging (aiohttp, redis,
aio-pika, nats, botocore, asyncio) leave through the same processors: one line
each, with `level`, `timestamp` and `event`, secrets masked.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from bridge.redaction import mask, mask_url

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
    """A structlog processor: mask every registered secret and URL credential in every value."""
    for key, value in event_dict.items():
        event_dict[key] = _masked(value)
    return event_dict


def masked_text(text: str) -> str:
    """`text` with every registered secret and URL credential masked."""
    return mask_url(mask(text, _secrets))


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return masked_text(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    if isinstance(value, BaseException):
        return masked_text(str(value))
    return value


# Marks the root handler `configure` installs, so configuring again replaces it.
_HANDLER_NAME = "absorb-bridge"


def configure(*, level: str = "info", json: bool | None = None) -> None:
    """Configure logging once for the process; `json=None` picks JSON when stderr is no TTY.

    `level` applies to the bridge's own events. Libraries log at WARNING and above
    unless `level` is debug, when their debug lines show too.
    """
    use_json = not sys.stderr.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    stamped: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *stamped,
            structlog.processors.format_exc_info,
            mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write per line, newline included: replicas sharing a log file never splice
        # their lines together (print() writes the newline apart when stderr is unbuffered).
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    _route_stdlib(level, stamped, renderer)


def _route_stdlib(
    level: str, stamped: list[structlog.typing.Processor], renderer: structlog.typing.Processor
) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamped],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            mask_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    wanted = logging.getLevelName(level.upper())
    root.setLevel(logging.DEBUG if wanted <= logging.DEBUG else max(wanted, logging.WARNING))
