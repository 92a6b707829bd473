"""Serve Ralph, an open-source LRS, on its file-system backend: `python ralph_lrs.py HOST PORT`.

Run with the interpreter of Ralph's own virtual environment (`.venv-ralph`), never
the project's. Ralph 5.1's file-system LRS backend writes its statements file in
"create" mode, so every write after the first fails with a 500; appending is what
an LRS needs, so the launcher switches the backend's default operation to APPEND
before serving the app. Settings (backend, auth file, directories) come from the
RALPH_* environment variables that tests/run sets.
"""

from __future__ import annotations

import sys

import uvicorn  # type: ignore[import-not-found]  # Ralph's venv has it, the project's not
from ralph.backends.data.base import BaseOperationType  # type: ignore[import-not-found]
from ralph.backends.lrs.fs import FSLRSBackend  # type: ignore[import-not-found]


def main() -> None:
    """Serve `ralph.api:app` on HOST PORT with appending writes."""
    host, port = sys.argv[1], int(sys.argv[2])
    FSLRSBackend.default_operation_type = BaseOperationType.APPEND
    uvicorn.run("ralph.api:app", host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
