"""`run`, `status` and `resync` as a user runs them, against the simulator and a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from bridge.absorb.models import Status
from tests.conftest import API_KEY, PASSWORD, USERNAME, SimHandle, StartSimulator

BRIDGE = [sys.executable, "-m", "bridge"]


def _config(
    tmp_path: Path,
    sim: SimHandle,
    redis_url: str,
    *,
    sinks: str,
    first_sync: str,
    budget: float = 200,
) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        f"""
absorb:
  base_url: {sim.url}
  api_key: ${{TEST_ABSORB_KEY}}
  username: {USERNAME}
  password_file: {tmp_path / "password"}
  max_requests_per_second: {budget:g}
redis:
  url: {redis_url}
  prefix: cmd-{secrets.token_hex(4)}
http:
  listen: 127.0.0.1:0
feeds:
  - name: courses
    resource: course_enrollments
    interval: 1s
    lookback: 2s
    first_sync: {first_sync}
sinks:
{sinks}
routes:
  - sinks: [out]
"""
    )
    (tmp_path / "password").write_text(PASSWORD + "\n")
    return path


ENV = {**os.environ, "TEST_ABSORB_KEY": API_KEY}


async def _cli(*args: str, expect: int = 0, timeout_s: float = 60) -> tuple[str, str]:
    """Run `absorb-bridge ARGS`; fail unless it exits with `expect`. Returns stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *BRIDGE, *args, env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode == expect, f"{args}: exit {proc.returncode}\n{err.decode()[-2000:]}"
    return out.decode(), err.decode()


async def _run_for(config: Path, seconds: float) -> tuple[str, str]:
    """`run` for `seconds`, then SIGTERM; fail unless it stops with exit code 0."""
    proc = await asyncio.create_subprocess_exec(
        *BRIDGE, "run", "--config", str(config), env=ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await asyncio.sleep(seconds)
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, f"run: exit {proc.returncode}\n{err.decode()[-2000:]}"
    return out.decode(), err.decode()


def _no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in (API_KEY, PASSWORD):
            assert secret not in text


async def test_run_prints_events_to_stdout_and_stops_cleanly(
    start_simulator: StartSimulator, redis_url: str, tmp_path: Path
) -> None:
    """`run` with a stdout sink prints one CloudEvent per line and exits 0 on SIGTERM."""
    sim = await start_simulator(users=30, courses=2)
    sinks = "  - name: out\n    type: stdout\n"
    config = _config(tmp_path, sim, redis_url, sinks=sinks, first_sync="emit")
    out, err = await _run_for(config, 6)
    events = [json.loads(line) for line in out.splitlines()]
    assert {e["subject"] for e in events} == set(sim.sim.tenant.enrollments)
    assert {e["type"] for e in events} == {"absorb.course_enrollment.created"}
    _no_secrets(out, err)


async def test_status_lists_scopes_and_quarantine_and_resync_retries(
    start_simulator: StartSimulator, redis_url: str, tmp_path: Path
) -> None:
    """`status` shows watermarks and quarantine; `resync` reads the record again, finds removals."""
    sim = await start_simulator(users=40, courses=2)
    out_file = tmp_path / "events.jsonl"
    sinks = f"  - name: out\n    type: file\n    path: {out_file}\n"
    config = _config(tmp_path, sim, redis_url, sinks=sinks, first_sync="baseline")
    records = list(sim.sim.tenant.enrollments.values())
    bad, gone = records[0], records[1]
    await sim.control("PATCH", f"records/{bad.id}", {"raw": {"dateEdited": "not a date"}})
    _, err = await _run_for(config, 4)

    out, err = await _cli("status", "--config", str(config), "--json")
    report: dict[str, Any] = json.loads(out)
    feed = report["feeds"][0]
    assert len(feed["scopes"]) == 2
    assert all(s["watermark"] for s in feed["scopes"])
    assert [q["key"].split("|")[1] for q in feed["quarantined"]] == [bad.id]
    assert "dateEdited" in feed["quarantined"][0]["error"]
    table, _ = await _cli("status", "--config", str(config))
    assert "quarantined" in table
    assert bad.id in table
    _no_secrets(out, table, err)

    await sim.control(
        "PATCH", f"records/{bad.id}", {"raw": None, "set": {"status": int(Status.Failed)}}
    )
    await sim.control("DELETE", f"records/{gone.id}")
    out, err = await _cli("resync", "--config", str(config), "--feed", "courses")
    assert "1 removed" in out
    assert "0 still quarantined" in out
    out, _ = await _cli("status", "--config", str(config), "--json")
    assert json.loads(out)["feeds"][0]["quarantined"] == []
    out, err = await _cli("resync", "--config", str(config), "--feed", "nope", expect=1)
    assert "no feed 'nope'" in out + err


async def test_status_names_the_shortfall_when_the_budget_cannot_keep_the_interval(
    start_simulator: StartSimulator, redis_url: str, tmp_path: Path
) -> None:
    """12 courses every 1s need 12 requests/s; with 4 the status says so, with figures."""
    sim = await start_simulator(users=30, courses=12)
    sinks = f"  - name: out\n    type: file\n    path: {tmp_path / 'events.jsonl'}\n"
    config = _config(tmp_path, sim, redis_url, sinks=sinks, first_sync="baseline", budget=4)
    await _run_for(config, 5)
    out, _ = await _cli("status", "--config", str(config), "--json")
    schedule = json.loads(out)["feeds"][0]["schedule"]
    assert schedule["scopes"] == 12
    assert schedule["keepable_s"] >= 2.5
    assert schedule["shortfall_s"] > 1
    assert schedule["age_max_s"] <= schedule["bound_s"] + 1.5
    assert "4 requests/s" in schedule["warning"]
    table, _ = await _cli("status", "--config", str(config))
    assert "WARNING: the budget of 4 requests/s keeps an interval of" in table
    assert "scope age p50" in table


async def test_commands_without_a_config_are_usage_errors() -> None:
    """No --config and no ABSORB_BRIDGE_CONFIG: exit 2 with a message saying what to pass."""
    env = {k: v for k, v in ENV.items() if k != "ABSORB_BRIDGE_CONFIG"}
    for command in ("run", "status", "check-config"):
        proc = await asyncio.create_subprocess_exec(
            *BRIDGE,
            command,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        assert proc.returncode == 2
        assert b"ABSORB_BRIDGE_CONFIG" in err


async def test_replay_moves_dead_letters_back_with_filters(
    redis: Any, redis_url: str, tmp_path: Path
) -> None:
    """`replay --id` takes one letter, `--since` the recent ones, and replay enables a sink."""
    import base64

    from bridge.config import HttpSinkConfig
    from bridge.delivery import Circuit, SinkWorker
    from bridge.routes import Route
    from bridge.sinks.http import HttpSink
    from bridge.store import Store
    from tests.engine import put_events, sample_events

    prefix = f"replay-{secrets.token_hex(3)}"
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef01234567").decode()
    sink_config = {"name": "hr", "type": "http", "url": "http://127.0.0.1:9/hook", "secret": secret}
    sink = HttpSink(HttpSinkConfig.model_validate({**sink_config, "timeout": "200ms"}))
    store = Store(redis, prefix)
    worker = SinkWorker(
        redis, prefix, sink, [Route(sinks=("hr",))], consumer="t", schedule=(0,),
        circuit=Circuit(threshold=10**6),
    )  # fmt: skip
    await worker.setup()
    events = sample_events(4, subjects=4)
    await put_events(store, events)
    for _ in range(5):
        await worker.feed_once()
        await worker.deliver_once()
    await sink.close()
    assert len(await worker.queue.dead_letters()) == 4
    await worker.queue.disable("sink hr: the receiver answered 410 Gone")
    config = tmp_path / "replay.yaml"
    config.write_text(
        f"""
absorb: {{base_url: "http://127.0.0.1:9", api_key: k, username: u, password: p}}
redis: {{url: "{redis_url}", prefix: {prefix}}}
feeds: [{{name: courses, resource: course_enrollments}}]
sinks: [{{name: hr, type: http, url: "http://127.0.0.1:9/hook", secret: "{secret}"}}]
routes: [{{sinks: [hr]}}]
"""
    )
    out, err = await _cli(
        "replay", "--config", str(config), "--sink", "hr", "--id", events[2]["id"]
    )
    assert "1 dead letter queued again and enabled the sink again" in out
    assert await worker.queue.disabled() is None
    assert len(await worker.queue.dead_letters()) == 3
    out, _ = await _cli(
        "replay", "--config", str(config), "--sink", "hr", "--since", "2030-01-01T00:00:00Z"
    )
    assert "0 dead letters queued again" in out
    out, _ = await _cli("replay", "--config", str(config), "--sink", "hr", "--since", "1h")
    assert "3 dead letters queued again" in out
    assert await worker.queue.dead_letters() == []
    assert (await worker.queue.counts())["queued"] == 4
    out, err = await _cli("replay", "--config", str(config), "--sink", "nope", expect=1)
    assert "no sink 'nope'" in out + err
