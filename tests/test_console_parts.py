"""The console's parts without a browser: its config section, the session and CSRF tokens,
the brake on guessing, the outbox's recent events, and a console that is off by default."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
import yaml
from structlog.testing import capture_logs

from bridge import health
from bridge.commands.check_config import check_config
from bridge.commands.wiring import connect
from bridge.config import load_config
from bridge.console import Console, auth, console_app
from bridge.console.resyncs import Resyncs
from bridge.console.views import EventFilter, event_row, outbox_event
from bridge.store import Store
from tests.conftest import free_port
from tests.test_config import base, problems, write

TOKEN = "console-token-" + secrets.token_hex(8)


def test_an_enabled_console_needs_a_token(tmp_path: Path) -> None:
    """`console.enabled` without a token is a problem named `console.token`; off needs none."""
    data = base()
    data["console"] = {"enabled": True}
    (found,) = problems(tmp_path, data)
    assert found.startswith("console.token: required when console.enabled is true"), found
    data["console"] = {"enabled": False}
    config, _ = load_config(write(tmp_path, data), {})
    assert config.console.enabled is False
    config, _ = load_config(write(tmp_path, base()), {})
    assert config.console.enabled is False
    assert config.console.token is None


def test_the_console_token_comes_from_env_or_a_file_and_is_never_printed(tmp_path: Path) -> None:
    """`${NAME}` and `token_file` both give the token; check-config shows it as ***."""
    data = base()
    data["console"] = {"enabled": True, "token": "${CONSOLE_TOKEN}"}
    config, _ = load_config(write(tmp_path, data), {"CONSOLE_TOKEN": TOKEN})
    assert config.console.token is not None
    assert config.console.token.get_secret_value() == TOKEN
    (tmp_path / "token").write_text(TOKEN + "\n")
    data["console"] = {"enabled": True, "token_file": str(tmp_path / "token")}
    path = write(tmp_path, data)
    config, _ = load_config(path, {})
    assert config.console.token is not None
    assert config.console.token.get_secret_value() == TOKEN
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(path), {}, out, err) == 0
    assert TOKEN not in out.getvalue() + err.getvalue() + repr(config)
    assert yaml.safe_load(out.getvalue())["console"] == {"enabled": True, "token": "***"}


def test_a_session_cookie_is_an_expiring_mac_of_the_token_not_the_token() -> None:
    """The cookie holds no token, expires, and fails for another token or a changed byte."""
    cookie = auth.session_cookie(TOKEN, now_s=1000.0)
    assert TOKEN not in cookie
    assert auth.session_valid(TOKEN, cookie, now_s=1000.0)
    assert not auth.session_valid(TOKEN, cookie, now_s=1000.0 + auth.SESSION_S + 1)
    assert not auth.session_valid("another-token", cookie, now_s=1000.0)
    expires, _, mac = cookie.partition(".")
    assert not auth.session_valid(TOKEN, f"{int(expires) + 9999}.{mac}", now_s=1000.0)
    assert not auth.session_valid(TOKEN, None, now_s=1000.0)
    assert not auth.session_valid(TOKEN, "garbage", now_s=1000.0)


def test_bearer_and_csrf_checks() -> None:
    """Bearer needs the exact token (None when no header); a CSRF token belongs to one session."""
    assert auth.bearer_valid(TOKEN, f"Bearer {TOKEN}") is True
    assert auth.bearer_valid(TOKEN, f"bearer {TOKEN}") is True
    assert auth.bearer_valid(TOKEN, "Bearer nope") is False
    assert auth.bearer_valid(TOKEN, f"Basic {TOKEN}") is False
    assert auth.bearer_valid(TOKEN, None) is None
    one, two = auth.session_cookie(TOKEN, 0.0), auth.session_cookie(TOKEN, 5.0)
    token = auth.csrf_token(TOKEN, one)
    assert auth.csrf_valid(TOKEN, one, token)
    assert not auth.csrf_valid(TOKEN, two, token)
    assert not auth.csrf_valid(TOKEN, one, "")
    assert not auth.csrf_valid(TOKEN, one, None)


def test_the_brake_doubles_the_wait_after_the_free_failures_and_forgets_on_success() -> None:
    """Five failures cost nothing; then 1, 2, 4 … seconds up to the cap; success resets;
    other addresses are not held up; memory stays bounded."""
    brake = auth.Brake(free_failures=5, first_wait_s=1.0, max_wait_s=8.0, max_clients=3)
    waits = [brake.failed("a", now_s=100.0) for _ in range(10)]
    assert waits == [0, 0, 0, 0, 0, 1, 2, 4, 8, 8]
    assert brake.wait_s("a", now_s=100.0) == 8
    assert brake.wait_s("a", now_s=108.0) == 0
    assert brake.wait_s("b", now_s=100.0) == 0
    brake.succeeded("a")
    assert brake.failed("a", now_s=200.0) == 0
    for client in ("b", "c", "d", "e"):
        brake.failed(client, now_s=200.0)
    assert len(brake._failures) <= 3


def test_event_rows_filter_on_type_status_course_and_subject() -> None:
    """A row reads the outbox entry's fields and the event's status; each filter narrows it;
    an entry whose event is not JSON still makes a row."""
    event = {"id": "e1", "type": "absorb.x.created", "status": "Complete", "subject": "s1"}
    fields = {"id": "e1", "type": "absorb.x.created", "subject": "s1", "course": "c1"}
    row = event_row("1-0", {**fields, "event": json.dumps(event)})
    assert row["status"] == "Complete"
    assert EventFilter().matches(row)
    assert EventFilter(type="absorb.x.created", status="Complete", course="c1").matches(row)
    assert not EventFilter(status="Failed").matches(row)
    assert not EventFilter(subject="s2").matches(row)
    assert not EventFilter(course="c2").matches(row)
    broken = event_row("2-0", {**fields, "event": "{not json"})
    assert broken["status"] is None
    assert broken["type"] == "absorb.x.created"


async def test_trimming_keeps_the_newest_delivered_events(redis: aioredis.Redis) -> None:
    """With `keep_recent`, trimming leaves that many of the newest events even when every sink
    has read them; without, it drops all that were read."""
    prefix = f"recent-{secrets.token_hex(3)}"
    store = Store(redis, prefix, keep_recent=3)
    outbox = f"{prefix}:outbox"
    await redis.xgroup_create(outbox, "sink:a", id="$", mkstream=True)
    ids = [await redis.xadd(outbox, {"n": str(n)}) for n in range(10)]
    read = await redis.xreadgroup("sink:a", "c", {outbox: ">"}, count=10)
    await redis.xack(outbox, "sink:a", *[i for i, _ in read[0][1]])
    assert await store.trim_outbox(keep=["a"]) == 7
    left = await redis.xrange(outbox)
    assert [i for i, _ in left] == ids[-3:]
    assert await Store(redis, prefix).trim_outbox(keep=["a"]) == 3


async def test_an_event_link_that_is_no_stream_id_is_simply_not_found(
    redis: aioredis.Redis,
) -> None:
    """A made-up entry id in an event's link finds nothing, as a trimmed event does: Redis
    would refuse it as an id, and that must not read as the bridge's state being broken."""
    prefix = f"entry-{secrets.token_hex(3)}"
    entry = await redis.xadd(f"{prefix}:outbox", {"event": json.dumps({"id": "e1"})})
    found = await outbox_event(redis, prefix, entry.decode())
    assert found is not None
    assert found["id"] == "e1"
    for made_up in ("not-an-id", "1-2-3", "+", "-", "9" * 30 + "-0", ""):
        assert await outbox_event(redis, prefix, made_up) is None


async def test_the_console_is_off_unless_enabled() -> None:
    """Without a console the health server answers 404 under /console/, health still 200."""
    runner, port = await health.serve(lambda: (True, {}), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/console/") as answer:
                assert answer.status == 404
            async with http.get(f"http://127.0.0.1:{port}/healthz") as answer:
                assert answer.status == 200
    finally:
        await runner.cleanup()


async def test_a_page_with_redis_down_is_one_clear_503_without_secrets(tmp_path: Path) -> None:
    """The console over a Redis that does not answer: the overview is a 503 saying it cannot
    read the bridge's state, naming no password; the server goes on serving."""
    password = "redis-pa55-" + secrets.token_hex(4)
    data = base()
    data["redis"] = {"url": f"redis://:{password}@127.0.0.1:{free_port()}/0"}
    data["console"] = {"enabled": True, "token": TOKEN}
    config, _ = load_config(write(tmp_path, data), {})
    async with connect(config) as parts:
        app = console_app(Console(config, parts))
        runner, port = await health.serve(lambda: (True, {}), "127.0.0.1", 0, console=app)
        try:
            url = f"http://127.0.0.1:{port}/console/"
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession(headers=bearer) as http:
                for _ in range(2):
                    async with http.get(url) as answer:
                        text = await answer.text()
                        assert answer.status == 503
                        assert text.startswith("the console cannot read the bridge's state:")
                        assert password not in text
                        assert TOKEN not in text
                async with http.get(url + "static/console.css") as answer:
                    assert answer.status == 200
        finally:
            await runner.cleanup()


async def test_a_resync_runs_apart_one_per_feed_and_says_how_it_ended() -> None:
    """A resync started from the console runs on its own: a second start while it runs is
    refused, its totals are its outcome, and one that raises is shown as failed with why,
    leaving the next free to start."""
    resyncs = Resyncs()
    release = asyncio.Event()

    async def slow() -> dict[str, int]:
        await release.wait()
        return {"of": 2, "scopes": 2, "records": 9, "events": 1, "removed": 0, "quarantined": 0}

    async def broken() -> dict[str, int]:
        raise RuntimeError("Absorb answered nonsense")

    assert resyncs.start("courses", slow, who="session")
    assert resyncs.running("courses")
    assert not resyncs.start("courses", slow, who="session")
    assert resyncs.last["courses"].ended is None
    release.set()
    await resyncs.wait("courses")
    done = resyncs.last["courses"]
    assert done.outcome == "2/2 scopes swept in full, 1 events, 0 still quarantined"
    assert not done.failed
    with capture_logs() as logs:
        assert resyncs.start("courses", broken, who="bearer")
        await resyncs.wait("courses")
    failed = resyncs.last["courses"]
    assert failed.failed
    assert failed.outcome == "failed: RuntimeError: Absorb answered nonsense"
    assert [e["event"] for e in logs] == ["console.resync_failed"]
    assert resyncs.start("courses", slow, who="session")
    await resyncs.stop()
    assert resyncs.last["courses"].outcome == "stopped with the bridge"
