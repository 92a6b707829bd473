"""Logs: the bridge's events and every library's stdlib logging leave as masked JSON lines."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from bridge import logs

SECRET = "s3cret-9f2c7a1e"


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Leaves structlog's set-up, the root logger and the secrets as the test found them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    saved = structlog.get_config()
    monkeypatch.setattr(logs, "_secrets", [])
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_library_logs_are_json_lines_with_secrets_masked(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library's warning comes out as one JSON line naming its logger, secrets and URL
    credentials masked, beside the bridge's own events in the same shape."""
    logs.configure(level="info", json=True)
    logs.register_secrets([SECRET])
    logging.getLogger("aiohttp.client").warning(
        "request to %s failed with key %s",
        "https://hr.example/hook?token=abc123def&page=2",
        SECRET,
    )
    structlog.get_logger("bridge.test").info("own event", detail=f"key {SECRET}")
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 2, lines
    library, own = lines
    assert library["logger"] == "aiohttp.client"
    assert library["level"] == "warning"
    assert library["event"] == (
        "request to https://hr.example/hook?token=***&page=2 failed with key ***"
    )
    assert library["timestamp"].endswith("Z")
    assert own["event"] == "own event"
    assert own["detail"] == "key ***"
    assert set(own) >= {"level", "timestamp"}


def test_library_exceptions_are_rendered_and_masked(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library's logged exception is one JSON line whose traceback text has no secret."""
    logs.configure(level="info", json=True)
    logs.register_secrets([SECRET])
    try:
        raise ConnectionError(f"AUTH {SECRET} refused by redis://:{SECRET}x@cache:6379")
    except ConnectionError:
        logging.getLogger("redis.asyncio.connection").exception("connection lost")
    err = capsys.readouterr().err
    assert SECRET not in err
    (line,) = _lines(err)
    assert line["logger"] == "redis.asyncio.connection"
    assert line["level"] == "error"
    assert line["event"] == "connection lost"
    assert "ConnectionError: AUTH *** refused by redis://:***@cache:6379" in line["exception"]


def test_library_logs_follow_the_log_level(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Libraries speak from WARNING at info level, from DEBUG at debug, and not below
    the bridge's own level when it is higher."""
    nats = logging.getLogger("nats.aio.client")
    logs.configure(level="info", json=True)
    nats.info("connected")
    nats.warning("slow consumer")
    assert [line["event"] for line in _lines(capsys.readouterr().err)] == ["slow consumer"]
    logs.configure(level="debug", json=True)
    nats.debug("PING sent")
    assert [line["event"] for line in _lines(capsys.readouterr().err)] == ["PING sent"]
    logs.configure(level="error", json=True)
    nats.warning("slow consumer")
    nats.error("gone")
    assert [line["event"] for line in _lines(capsys.readouterr().err)] == ["gone"]


def test_configuring_twice_keeps_one_handler(configured: None) -> None:
    """configure() replaces its own root handler, so a library's line is never written twice."""
    logs.configure(level="info", json=True)
    logs.configure(level="info", json=True)
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "absorb-bridge"]
    assert len(ours) == 1


def test_an_unretrieved_task_exception_leaves_through_the_pipeline() -> None:
    """In a real process, asyncio's "Task exception was never retrieved" is a JSON line
    from the `asyncio` logger with the secret in the exception masked."""
    script = textwrap.dedent(
        f"""
        import asyncio, gc
        from bridge import logs

        logs.configure(level="info", json=True)
        logs.register_secrets([{SECRET!r}])

        async def fail():
            raise RuntimeError("login with " + {SECRET!r} + " refused")

        async def main():
            task = asyncio.create_task(fail())
            await asyncio.sleep(0.05)
            del task
            gc.collect()

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stderr
    (line,) = _lines(done.stderr)
    assert line["logger"] == "asyncio"
    assert line["level"] == "error"
    assert line["event"].startswith("Task exception was never retrieved")
    assert "RuntimeError: login with *** refused" in line["exception"]


def test_each_line_is_one_write(configured: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line, the bridge's own or a library's, reaches stderr in one write with its
    newline, so processes appending to one file never splice their lines together."""
    writes: list[str] = []

    class Recording(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    monkeypatch.setattr(sys, "stderr", Recording())
    logs.configure(level="info", json=True)
    structlog.get_logger("bridge.test").info("own event")
    logging.getLogger("aiohttp.access").warning("library event")
    assert [json.loads(w)["event"] for w in writes] == ["own event", "library event"]
    assert all(w.endswith("}\n") and w.count("\n") == 1 for w in writes), writes
