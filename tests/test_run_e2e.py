"""`absorb-bridge run` against `absorb-bridge simulate`, both as real processes, for a minute."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bridge.absorb.models import Status
from tests.conftest import daemon_config, free_port

BRIDGE = [sys.executable, "-m", "bridge"]
ACTIVE_S = 60
INTERVAL_S = 1


def _control(url: str, path: str, body: Any = None, method: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url}/_sim/{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.load(reply)


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the simulator exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("the simulator did not open its port")


def _until_baselined(config: Path, env: dict[str, str], scopes: int, poll_s: float) -> None:
    """Wait (up to 30 s) until `status` lists `scopes` scopes of the first feed."""
    deadline = time.monotonic() + 30
    while len(_status(config, env)["feeds"][0]["scopes"]) < scopes:
        assert time.monotonic() < deadline, "baseline did not finish"
        time.sleep(poll_s)


def _status(config: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [*BRIDGE, "status", "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=30, env=env, check=True,
    )  # fmt: skip
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_a_minute_of_live_activity(redis_url: str, tmp_path: Path) -> None:
    """Event chains are whole and end where the simulator is; they match its own change log."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sim_args = [
        "simulate", "--port", str(port), "--api-key", "K", "--username", "U", "--password", "W",
        "--users", "80", "--courses", "6", "--seed", "11",
    ]  # fmt: skip
    events_file = tmp_path / "events.jsonl"
    prefix = f"e2e-{port}"
    config = daemon_config(
        tmp_path / "bridge.yaml",
        sim_url=url,
        redis_url=redis_url,
        prefix=prefix,
        interval_s=INTERVAL_S,
        api_key="${SIM_KEY}",
        sinks=f"""  - name: audit
    type: file
    path: {events_file}
""",
        routes="  - sinks: [audit]\n",
    )
    env = {**os.environ, "SIM_KEY": "K"}
    with subprocess.Popen([*BRIDGE, *sim_args], stdout=subprocess.DEVNULL) as sim:
        try:
            _wait_port(port, sim)
            before = _control(url, "statuses")
            start_seq = _control(url, "state")["lastChange"]
            log = (tmp_path / "bridge.log").open("wb")
            with subprocess.Popen(
                [*BRIDGE, "run", "--config", str(config)], env=env, stderr=log
            ) as bridge:
                try:
                    _until_baselined(config, env, 6, 0.5)
                    assert not events_file.exists() or events_file.read_text() == ""
                    _control(url, "activity", {"per_second": 4}, method="PUT")
                    time.sleep(ACTIVE_S)
                    _control(url, "activity", {"per_second": 0}, method="PUT")
                    time.sleep(INTERVAL_S * 5)
                finally:
                    bridge.send_signal(signal.SIGTERM)
                    bridge.wait(30)
                    log.close()
                assert bridge.returncode == 0, (tmp_path / "bridge.log").read_text()[-2000:]
            after = _control(url, "statuses")
            changes = _control(url, f"changes?after={start_seq}")
        finally:
            sim.send_signal(signal.SIGTERM)
            sim.wait(15)
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    _check(events, before, after, changes)


def _check(
    events: list[dict[str, Any]],
    before: dict[str, Any],
    after: dict[str, Any],
    changes: list[dict[str, Any]],
) -> None:
    course_events = [e for e in events if e["type"].startswith("absorb.course_enrollment.")]
    assert len(course_events) > 50, "too little happened to prove anything"
    assert len({e["id"] for e in events}) == len(events)
    chains: dict[str, list[dict[str, Any]]] = {}
    for event in course_events:
        chains.setdefault(event["subject"], []).append(event)
    for rid, chain in chains.items():
        status = Status(before[rid]["status"]).name if rid in before else None
        for event in chain:
            if event["type"].endswith(".created"):
                assert status is None, f"{rid}: created twice or after a baseline"
            else:
                assert event["previousstatus"] == status, f"{rid}: chain broken"
            status = event["status"]
        if rid in after:
            assert status == Status(after[rid]["status"]).name, f"{rid}: ends at the wrong status"
    moved = {
        rid for rid in after if rid in before and after[rid]["status"] != before[rid]["status"]
    }
    assert moved <= set(chains), "an enrollment changed without an event"
    # Where an enrollment never changed twice within one interval, the bridge saw every step.
    logged: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        if change["kind"] == "course_enrollment":
            logged.setdefault(change["enrollmentId"], []).append(change)
    compared = 0
    for rid, steps in logged.items():
        times = [time_of(c["dateEdited"]) for c in steps]
        if any(b - a < 2 * INTERVAL_S for a, b in itertools.pairwise(times)):
            continue
        if any(c["status"] is None for c in steps):
            continue  # un-enrolled: found only by a reconciliation sweep
        seen = [(e.get("previousstatus"), e["status"]) for e in chains.get(rid, [])]
        expected = [(_name(c["previousStatus"]), _name(c["status"])) for c in steps]
        assert seen == expected, f"{rid}: events {seen} but the simulator logged {expected}"
        compared += 1
    assert compared > 20


def _name(value: int | None) -> str | None:
    return None if value is None else Status(value).name


def time_of(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()
