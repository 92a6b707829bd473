"""The `file` sink: one CloudEvent JSON a line, flushed and fsynced before it counts."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import IO

from bridge.sinks.base import Delivery, SinkError


class FileSink:
    """Appends events to a file; an event is delivered once it is on disk."""

    def __init__(self, name: str, path: str | Path, *, fsync: bool = True) -> None:
        self.name = name
        self.last_reply = ""
        self.path = Path(path)
        self.fsync = fsync
        self._file: IO[str] | None = None

    async def start(self) -> None:
        """Open the file for appending (creating its folder)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as e:
            raise SinkError(self.name, f"cannot open {self.path}: {e.strerror}") from e

    async def send(self, delivery: Delivery) -> None:
        """Write the line, flush it and (by default) fsync it."""
        if self._file is None:
            await self.start()
        assert self._file is not None
        try:
            await asyncio.to_thread(self._write, delivery.body)
        except OSError as e:
            raise SinkError(self.name, f"cannot write {self.path}: {e.strerror}") from e
        self.last_reply = f"appended to {self.path}" + (" and fsynced" if self.fsync else "")

    def _write(self, body: str) -> None:
        assert self._file is not None
        self._file.write(body + "\n")
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    async def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
