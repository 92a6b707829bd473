"""The everyday commands as an operator runs them: `status --check`, `dead-letters`,
`test-sink`, each with Redis or Absorb out of reach, options after the command, and
two `run` processes from one config on one host."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import signal
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from bridge.absorb.models import Status
from bridge.simulator.faults import Faults
from tests.conftest import (
    PASSWORD,
    USERNAME,
    MakeClient,
    StartSimulator,
    free_port,
)
from tests.receivers import Receiver, serve
from tests.test_commands import BRIDGE, ENV, _cli, _no_secrets
from tests.test_supervision import FAST, make_bridge, until

SECRET = "whsec_" + base64.b64encode(b"operator-commands-secret").decode()
REDIS_PASSWORD = "redis-pa55-xyz"


def _write_config(
    tmp_path: Path,
    *,
    absorb_url: str,
    redis_url: str,
    sinks: str,
    prefix: str | None = None,
    listen: str = "127.0.0.1:0",
    routes: str = "  - sinks: [out]\n",
) -> Path:
    path = tmp_path / f"bridge-{secrets.token_hex(3)}.yaml"
    path.write_text(
        f"""
absorb:
  base_url: {absorb_url}
  api_key: ${{TEST_ABSORB_KEY}}
  username: {USERNAME}
  password_file: {tmp_path / "password"}
  max_requests_per_second: 200
redis:
  url: {redis_url}
  prefix: {prefix or f"ops-{secrets.token_hex(4)}"}
http:
  listen: {listen}
feeds:
  - name: courses
    resource: course_enrollments
    interval: 1s
    max_interval: 2s
    lookback: 2s
sinks:
{sinks}
routes:
{routes}"""
    )
    (tmp_path / "password").write_text(PASSWORD + "\n")
    return path


async def _cli_any(*args: str) -> tuple[int, str, str]:
    """Run `absorb-bridge ARGS` whatever its exit code: the code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *BRIDGE, *args, env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _dead_redis() -> str:
    return f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"


def _one_clear_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


async def test_every_command_with_redis_down_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    """status, status --check, dead-letters, replay, resync and test-sink of a Redis stream:
    one line naming Redis, exit 1, no traceback, no password."""
    sinks = "  - name: out\n    type: redis_stream\n    stream: events\n"
    config = str(
        _write_config(
            tmp_path, absorb_url="http://127.0.0.1:9", redis_url=_dead_redis(), sinks=sinks
        )
    )
    commands = [
        ["status"],
        ["status", "--check"],
        ["status", "--json"],
        ["dead-letters", "--sink", "out"],
        ["replay", "--sink", "out"],
        ["resync", "--feed", "courses"],
    ]
    for command in commands:
        out, err = await _cli(*command, "--config", config, expect=1)
        line = _one_clear_line(err)
        assert line.startswith(f"absorb-bridge {command[0]}: cannot reach Redis"), line
        assert out == ""
        _no_secrets(out, err)
        assert REDIS_PASSWORD not in err
    out, err = await _cli("test-sink", "--sink", "out", "--config", config, expect=1)
    assert "NOT delivered" in out
    assert "cannot XADD" in out
    assert "Traceback" not in out + err
    assert REDIS_PASSWORD not in out + err


async def test_resync_with_absorb_down_prints_one_line(redis_url: str, tmp_path: Path) -> None:
    """Redis answers but Absorb does not: resync says it cannot reach Absorb, exit 1."""
    config = _write_config(
        tmp_path,
        absorb_url=f"http://127.0.0.1:{free_port()}",
        redis_url=redis_url,
        sinks="  - name: out\n    type: stdout\n",
    )
    _, err = await _cli("resync", "--feed", "courses", "--config", str(config), expect=1)
    line = _one_clear_line(err)
    assert line.startswith("absorb-bridge resync: cannot reach Absorb"), line
    _no_secrets(err)


async def test_global_options_work_before_and_after_the_command(
    redis_url: str, tmp_path: Path
) -> None:
    """`--log-level` and `--config` may come before or after the command."""
    config = str(
        _write_config(
            tmp_path,
            absorb_url="http://127.0.0.1:9",
            redis_url=redis_url,
            sinks="  - name: out\n    type: stdout\n",
        )
    )
    after, _ = await _cli("check-config", "--config", config, "--log-level", "debug")
    before, _ = await _cli("--log-level", "debug", "--config", config, "check-config")
    assert after == before
    assert "courses" in after
    _, err = await _cli("check-config", "--config", config, "--log-level", "loud", expect=2)
    assert "--log-level" in err


async def test_status_check_finds_dead_letters_a_disabled_sink_and_quarantine(
    start_simulator: StartSimulator, redis_url: str, tmp_path: Path
) -> None:
    """With `run` going: exit 0 while all is well; then dead letters (a receiver failing),
    a sink disabled by 410 and a quarantined record each give a line and exit 1;
    `dead-letters` lists them with their tries and last error. Once `run` stops,
    the check says no replica runs."""
    sim = await start_simulator(users=20, courses=2)
    failing = Receiver([SECRET])
    gone = Receiver([SECRET])
    healthy = {"ok": True}

    async def fail_while_told(_n: int, _request: web.Request) -> int | None:
        return None if healthy["ok"] else 500

    async def answer_gone(_n: int, _request: web.Request) -> int | None:
        return None if healthy["ok"] else 410

    failing.behaviour, gone.behaviour = fail_while_told, answer_gone
    sinks = (
        f"  - name: hr\n    type: http\n    url: {await failing.start()}\n"
        f"    secret: {SECRET}\n    retry_schedule: [100ms]\n"
        f"  - name: gone\n    type: http\n    url: {await gone.start()}\n    secret: {SECRET}\n"
    )
    config = str(
        _write_config(
            tmp_path,
            absorb_url=sim.url,
            redis_url=redis_url,
            sinks=sinks,
            routes="  - sinks: [hr, gone]\n",
        )
    )
    proc = await _start_run(config, tmp_path / "run.log")
    try:
        await until(lambda: _check_passes(config), "status --check to pass while all is well")
        healthy["ok"] = False
        record = next(iter(sim.sim.tenant.enrollments.values()))
        await sim.control(
            "PATCH", f"records/{record.id}", {"set": {"progress": 50}, "raw": {"status": "x"}}
        )
        changed = list(sim.sim.tenant.enrollments.values())[1:4]
        for rec in changed:
            new = Status.Failed if rec.status != Status.Failed else Status.InProgress
            await sim.control("PATCH", f"records/{rec.id}", {"set": {"status": int(new)}})

        async def all_found() -> bool:
            _, _, err = await _cli_any("status", "--check", "--config", config)
            return all(w in err for w in ("dead letter", "disabled", "quarantined record"))

        await until(all_found, "the check to see every problem", timeout_s=60)
        out, err = await _cli("status", "--check", "--json", "--config", config, expect=1)
        report = json.loads(out)
        assert report["problems"] == [line.removeprefix("PROBLEM: ") for line in err.splitlines()]
        assert any(p.startswith("sink hr: ") and "dead letter" in p for p in report["problems"])
        assert any(p.startswith("sink gone: disabled: ") for p in report["problems"])
        assert "feed courses: 1 quarantined record" in report["problems"]
        assert len(report["replicas"]) == 1
        _no_secrets(out, err)

        out, _ = await _cli("dead-letters", "--sink", "hr", "--json", "--config", config)
        letters = [json.loads(line) for line in out.splitlines()]
        assert {letter["subject"] for letter in letters} <= {r.id for r in changed}
        assert letters
        for letter in letters:
            assert letter["type"] == "absorb.course_enrollment.status_changed"
            assert letter["tries"] >= 1
            assert "HTTP 500" in letter["last_error"]
            assert re.fullmatch(r"[0-9a-f]{32}", letter["id"])
        table, _ = await _cli("dead-letters", "--sink", "hr", "--limit", "1", "--config", config)
        assert "1 dead letter, newest first" in table
        assert letters[0]["id"] in table
        await _cli("dead-letters", "--sink", "nope", "--config", config, expect=1)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        await failing.stop()
        await gone.stop()
    _, err = await _cli("status", "--check", "--config", config, expect=1)
    assert "PROBLEM: no replica running" in err


async def _check_passes(config: str) -> bool:
    """The check passes with every scope baselined (changes from now on are events)."""
    code, out, _ = await _cli_any("status", "--check", "--json", "--config", config)
    scopes = json.loads(out)["feeds"][0]["scopes"] if out else []
    return code == 0 and len(scopes) == 2 and all(s["swept_at"] for s in scopes)


async def test_status_check_names_a_dead_and_a_stalled_loop(
    start_simulator: StartSimulator,
    make_client: MakeClient,
    redis: aioredis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    """A replica whose sink never opens (stalled) and whose feeder task ended (dead):
    `status --check` names both loops, read from Redis by another process."""
    from bridge.service import Timing
    from bridge.sinks.file import FileSink

    class NeverOpens(FileSink):
        async def start(self) -> None:
            raise OSError("the disk is not there")

    sim = await start_simulator(users=10, courses=1)
    prefix = f"loops-{secrets.token_hex(3)}"
    timing = Timing(**{**FAST.__dict__, "stall_floor_s": 0.5, "stats_interval_s": 0.1})
    sinks = [FileSink("out", tmp_path / "out.jsonl"), NeverOpens("broken", tmp_path / "x")]
    bridge = make_bridge(make_client(sim.url), redis, sim, sinks, prefix=prefix, timing=timing)
    config = str(
        _write_config(
            tmp_path,
            absorb_url=sim.url,
            redis_url=redis_url,
            prefix=prefix,
            sinks=f"  - name: out\n    type: file\n    path: {tmp_path / 'o'}\n",
        )
    )
    await bridge.start()
    try:
        await until(lambda: _has_loop(bridge, "feed:out"), "the sink out to open")
        task = bridge.loops.loops["feed:out"].task
        assert task is not None
        task.cancel()

        async def both_named() -> bool:
            _, _, err = await _cli_any("status", "--check", "--config", config)
            return "loop feed:out dead" in err and "loop open:broken stalled" in err

        await until(both_named, "status --check to name the dead and the stalled loop")
        _, err = await _cli("status", "--check", "--config", config, expect=1)
        assert bridge.replica_id in err
        assert "the disk is not there" in err
    finally:
        await bridge.stop()


async def _has_loop(bridge: Any, name: str) -> bool:
    return name in bridge.loops.loops


async def test_test_sink_signs_like_real_deliveries_and_prints_the_answer(
    redis_url: str, tmp_path: Path
) -> None:
    """An http sink: the receiver verifies the Standard Webhooks signature and parses a
    CloudEvent; the command prints the status, time and the body's first line. A
    receiver answering 500 makes it exit 1 showing that answer. Redis is not needed."""
    receiver = Receiver([SECRET])

    async def accept_once(n: int, _request: web.Request) -> int | None:
        return None if n == 0 else 500

    receiver.behaviour = accept_once
    url = await receiver.start()
    sinks = f"  - name: out\n    type: http\n    url: {url}\n    secret: {SECRET}\n"
    config = str(
        _write_config(
            tmp_path, absorb_url="http://127.0.0.1:9", redis_url=_dead_redis(), sinks=sinks
        )
    )
    try:
        out, _ = await _cli("test-sink", "--config", config, "--sink", "out")
        assert re.search(r"test-sink out: delivered in \d+ ms: HTTP 204: \(empty body\)", out), out
        assert receiver.problems == []
        (event,) = receiver.accepted
        assert event["type"] == "absorb.course_enrollment.status_changed"
        assert event["status"] == "Complete"
        assert event["previousstatus"] == "InProgress"
        assert event["id"] in out
        out, _ = await _cli("test-sink", "--config", config, "--sink", "out", expect=1)
        assert "NOT delivered" in out
        assert "HTTP 500" in out
    finally:
        await receiver.stop()


async def test_test_sink_shows_the_http_body_and_a_stream_id(
    redis: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """The first line of an http receiver's body is printed; a Redis stream sink prints
    the entry id Redis gave the event."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202, text="queued as job 42\nmore detail")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner, base = await serve(app)
    stream = f"ops-stream-{secrets.token_hex(3)}"
    sinks = (
        f"  - name: out\n    type: http\n    url: {base}/hook\n    secret: {SECRET}\n"
        f"  - name: stream\n    type: redis_stream\n    stream: {stream}\n"
    )
    config = str(
        _write_config(tmp_path, absorb_url="http://127.0.0.1:9", redis_url=redis_url, sinks=sinks)
    )
    try:
        out, _ = await _cli("test-sink", "--config", config, "--sink", "out")
        assert "HTTP 202: queued as job 42" in out
        assert "more detail" not in out
        out, _ = await _cli("test-sink", "--sink", "stream", "--config", config)
        ((entry_id, _fields),) = await redis.xrange(stream)
        assert f"stored in stream {stream} as {entry_id.decode()}" in out
    finally:
        await runner.cleanup()


async def test_two_runs_from_one_config_on_one_host_both_serve_health_and_sweep(
    start_simulator: StartSimulator, redis_url: str, tmp_path: Path
) -> None:
    """The second `run` finds the configured port taken, serves health on a free one and
    says which; both answer /healthz and both sweep. An address given by
    ABSORB_BRIDGE_HTTP_LISTEN that is in use is one clear line and exit 1."""
    # Sweeps that take a while, so one replica cannot take every due scope in one tick.
    sim = await start_simulator(
        users=40, courses=8, faults=Faults(rate_limit_per_s=None, latency_ms=150)
    )
    port = free_port()
    config = str(
        _write_config(
            tmp_path,
            absorb_url=sim.url,
            redis_url=redis_url,
            listen=f"127.0.0.1:{port}",
            sinks=f"  - name: out\n    type: file\n    path: {tmp_path / 'events.jsonl'}\n",
        )
    )
    procs = []
    try:
        first = await _start_run(config, tmp_path / "first.log")
        procs.append(first)
        await until(lambda: _healthy(f"http://127.0.0.1:{port}"), "the first run to serve health")
        procs.append(await _start_run(config, tmp_path / "second.log"))
        line = await _line_with(tmp_path / "second.log", "http.port_taken")
        other = int(re.search(r"http://127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        assert other != port
        await until(lambda: _healthy(f"http://127.0.0.1:{other}"), "the second run to serve health")
        for base in (f"http://127.0.0.1:{port}", f"http://127.0.0.1:{other}"):
            await until(lambda base=base: _swept(base), f"{base} to sweep", timeout_s=60)

        taken = await asyncio.create_subprocess_exec(
            *BRIDGE, "run", "--config", config,
            env={**ENV, "ABSORB_BRIDGE_HTTP_LISTEN": f"127.0.0.1:{port}"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(taken.communicate(), 30)
        assert taken.returncode == 1
        assert "Traceback" not in err.decode()
        assert "absorb-bridge run: address already in use" in err.decode()
        assert "ABSORB_BRIDGE_HTTP_LISTEN" in err.decode()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert await asyncio.wait_for(proc.wait(), 30) == 0


async def _start_run(config: str, log: Path) -> asyncio.subprocess.Process:
    """`run` in the background, its output in `log` (a pipe nobody reads would fill up)."""
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *BRIDGE, "run", "--config", config, env=ENV, stdout=out, stderr=out
        )


async def _line_with(log: Path, needle: str) -> str:
    async with asyncio.timeout(30):
        while True:
            text = await asyncio.to_thread(log.read_text)
            for line in text.splitlines():
                if needle in line:
                    return line
            await asyncio.sleep(0.1)


async def _healthy(base: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as reply:
            return reply.status == 200
    except aiohttp.ClientError:
        return False


async def _swept(base: str) -> bool:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as reply:
        text = await reply.text()
    found = re.search(r'absorb_bridge_sweeps_total\{feed="courses",outcome="ok"\} (\S+)', text)
    return found is not None and float(found.group(1)) > 0


async def test_bash_completion_completes_commands_and_their_options(tmp_path: Path) -> None:
    """`completion bash` prints a script that completes command names and each command's
    options, the global ones included."""
    out, _ = await _cli("completion", "bash")
    script = tmp_path / "absorb-bridge.bash"
    script.write_text(out)

    async def complete(*words: str) -> set[str]:
        line = " ".join(words)
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c",
            f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
            '_shtab_absorb_bridge; printf "%s\\n" "${COMPREPLY[@]}"',
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        done, _ = await proc.communicate()
        return set(done.decode().split())

    assert await complete("absorb-bridge", "dead") == {"dead-letters"}
    assert {"test-sink", "status", "run"} <= await complete("absorb-bridge", "''")
    options = await complete("absorb-bridge", "dead-letters", "--")
    assert {"--sink", "--limit", "--json", "--config", "--log-level"} <= options


async def test_simulate_on_a_taken_port_is_one_line(tmp_path: Path) -> None:
    """`simulate` on a port in use says so in one line and exits 1."""
    runner, base = await serve(web.Application())
    port = base.rsplit(":", 1)[1]
    try:
        args = ["simulate", "--port", port, "--api-key", "k", "--username", "u", "--password", "p"]
        _, err = await _cli(*args, expect=1)
    finally:
        await runner.cleanup()
    line = _one_clear_line(err)
    assert line.startswith("absorb-bridge simulate: address already in use"), line
    assert line.endswith("choose another --host or --port")


def test_a_scope_is_stale_past_what_the_budget_allows_and_the_grace() -> None:
    """The stale-scope check: a scope unswept for its feed's interval or staleness bound
    (the larger) plus 30 s is fine, a second more is a problem naming the worst scope; a
    scope never swept yet is not judged."""
    from bridge.commands.checks import STALE_GRACE_S, stale_scopes

    limit = 90 + STALE_GRACE_S

    def report(*ages: float | None) -> dict[str, Any]:
        scopes = [{"scope": f"course:{n}", "age_s": age} for n, age in enumerate(ages)]
        schedule = {"interval_s": 60.0, "bound_s": 90.0}
        return {"feeds": [{"name": "courses", "scopes": scopes, "schedule": schedule}]}

    assert stale_scopes(report(limit, None, 5)) == []
    assert stale_scopes(report(limit + 1, limit + 100, 5)) == [
        f"feed courses: 2 scopes stale, course:1 last swept {limit + 100:.0f}s ago"
        " (the budget allows 90s)"
    ]


async def test_status_check_names_a_scope_left_unswept(
    start_simulator: StartSimulator,
    make_client: MakeClient,
    redis: aioredis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> None:
    """A scope swept for real whose last sweep is then an hour old (as when every replica
    stopped sweeping it) is reported stale by `status --check`, read from Redis."""

    from bridge import clock
    from bridge.feeds import FeedSpec
    from tests.engine import make_engine

    sim = await start_simulator(users=10, courses=1)
    engine = make_engine(sim, make_client(sim.url), redis)
    feed = FeedSpec(name="courses", resource="course_enrollments", interval_s=1.0)
    scope = engine.scope(feed)
    await engine.sweep(scope)
    config = str(
        _write_config(
            tmp_path,
            absorb_url=sim.url,
            redis_url=redis_url,
            prefix=engine.store.prefix,
            sinks="  - name: out\n    type: stdout\n",
        )
    )
    _, err = await _cli("status", "--check", "--config", config, expect=1)
    assert "stale" not in err
    an_hour_ago = clock.now().timestamp() - 3600
    await engine.store.set_scope_state("courses", scope.key, {"sweep_started": repr(an_hour_ago)})
    _, err = await _cli("status", "--check", "--config", config, expect=1)
    # The command runs a moment after the hour was set: 3600s, or a second more on a busy host.
    stale = re.search(
        rf"PROBLEM: feed courses: 1 scope stale, {re.escape(scope.key)} last swept (\d+)s ago",
        err,
    )
    assert stale, err
    assert 3600 <= int(stale.group(1)) <= 3605


async def test_run_with_redis_down_stays_up_not_ready_and_stops_cleanly(tmp_path: Path) -> None:
    """The daemon is the one command that does not exit when Redis is down: it serves
    /readyz 503 naming Redis, prints no traceback and no password, and exits 0 on SIGTERM."""
    config = str(
        _write_config(
            tmp_path,
            absorb_url="http://127.0.0.1:9",
            redis_url=_dead_redis(),
            sinks="  - name: out\n    type: stdout\n",
        )
    )
    log = tmp_path / "run.log"
    proc = await _start_run(config, log)
    try:
        line = await _line_with(log, "bridge.starting")
        base = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)  # type: ignore[union-attr]

        async def redis_named() -> bool:
            async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as reply:
                body = await reply.json()
                return reply.status == 503 and "unreachable" in body["checks"]["redis"]

        await until(redis_named, "/readyz to name Redis")
        assert proc.returncode is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    text = log.read_text()
    assert "Traceback" not in text
    assert REDIS_PASSWORD not in text
