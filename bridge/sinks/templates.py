"""Body templates: a user's Jinja2 file, run in Jinja2's sandbox.

A template is the user's code running inside the daemon, on data Absorb sent. The
sandbox keeps it from reaching Python internals (`__class__`, `__globals__` and the
like); whatever it raises while rendering is a failed try of that one event that
names the file and the line, never the end of the sink.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.sinks.base import SinkError


class BodyTemplate:
    """One loaded template file; `render` returns its text or raises SinkError."""

    def __init__(self, sink: str, path: Path, template: Any) -> None:
        self.sink = sink
        self.path = path
        self._template = template

    def render(self, event_id: object, **values: Any) -> str:
        """The rendered text; any error is a SinkError naming the file, the line and the event."""
        try:
            text: str = self._template.render(**values)
        except Exception as e:  # the template is the user's code: whatever it raises is theirs
            where = _where(self.path, e)
            raise SinkError(
                self.sink,
                f"the template {where} failed for event {event_id}: {type(e).__name__}: {e}",
            ) from None
        return text


def load(sink: str, path: Path, *, tojson: Callable[[Any], str] = json.dumps) -> BodyTemplate:
    """Read and compile the template at `path` in a sandbox; SinkError names what is wrong."""
    try:
        import jinja2
        from jinja2.sandbox import SandboxedEnvironment
    except ImportError:
        raise SinkError(
            sink, "body templates need Jinja2: pip install 'absorb-bridge[templates]'"
        ) from None
    environment = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
    # Jinja2's own `tojson` escapes for HTML; these bodies are JSON.
    environment.filters["tojson"] = tojson
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SinkError(sink, f"cannot read the template {path}: {e}") from None
    try:
        code = environment.compile(source, name=path.name, filename=str(path))
    except jinja2.TemplateSyntaxError as e:
        raise SinkError(sink, f"the template {path}, line {e.lineno}: {e.message}") from None
    template = environment.template_class.from_code(
        environment, code, environment.make_globals(None)
    )
    return BodyTemplate(sink, path, template)


def _where(path: Path, error: BaseException) -> str:
    """`path, line N`: Jinja2 rewrites tracebacks so template frames carry template lines."""
    lineno = getattr(error, "lineno", None)
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == str(path):
            lineno = frame.lineno
    return f"{path}, line {lineno}" if lineno else str(path)
