"""`absorb-bridge run` with `interval: 60s` against `absorb-bridge simulate` announcing every
status change: the changes arrive within seconds, each once, long before the interval."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bridge.absorb.models import Status
from tests.conftest import daemon_config, free_port
from tests.test_run_e2e import (
    BRIDGE,
    _control,
    _status,
    _until_baselined,
    _wait_port,
    time_of,
)

ACTIVE_S = 20
#: Well below the 60 s interval: only a notice can bring a change this soon.
ARRIVAL_S = 15
#: Changes of one enrollment closer than this may be seen as one by a single sweep.
APART_S = 3
SECRET = "e2e-webhook-Secret-Key"


def _config(tmp_path: Path, sim_url: str, redis_url: str, hook_port: int) -> Path:
    return daemon_config(
        tmp_path / "bridge.yaml",
        sim_url=sim_url,
        redis_url=redis_url,
        prefix=f"notices-e2e-{hook_port}",
        interval_s=60,
        max_requests_per_second=50,
        webhooks=f"""  webhooks:
    listen: 127.0.0.1:{hook_port}
    path: /absorb/webhooks
    secret: ${{HOOK_SECRET}}
""",
        sinks=f"""  - name: audit
    type: file
    path: {tmp_path / "events.jsonl"}
""",
        routes="  - sinks: [audit]\n",
    )


def test_announced_changes_arrive_within_seconds_each_once(redis_url: str, tmp_path: Path) -> None:
    """With every status change announced (every body shape but the useless one), each change
    reaches the sink within ARRIVAL_S of happening, though the interval is 60 s; no event twice."""
    port, hook_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    sim_args = [
        "simulate", "--port", str(port), "--api-key", "K", "--username", "U", "--password", "W",
        "--users", "60", "--courses", "6", "--seed", "5",
    ]  # fmt: skip
    config = _config(tmp_path, url, redis_url, hook_port)
    env = {**os.environ, "HOOK_SECRET": SECRET}
    events_file = tmp_path / "events.jsonl"
    with subprocess.Popen([*BRIDGE, *sim_args], stdout=subprocess.DEVNULL) as sim:
        try:
            _wait_port(port, sim)
            log = (tmp_path / "bridge.log").open("wb")
            with subprocess.Popen(
                [*BRIDGE, "run", "--config", str(config)], env=env, stderr=log
            ) as bridge:
                try:
                    _until_baselined(config, env, 6, 0.3)
                    start_seq = _control(url, "state")["lastChange"]
                    _control(url, "webhooks", _announce_all(hook_port), method="PUT")
                    _control(url, "activity", {"per_second": 3}, method="PUT")
                    seen = _watch(events_file, ACTIVE_S)
                    _control(url, "activity", {"per_second": 0}, method="PUT")
                    seen.update(_watch(events_file, ARRIVAL_S, seen))
                    report = _status(config, env)
                finally:
                    bridge.send_signal(signal.SIGTERM)
                    bridge.wait(30)
                    log.close()
                assert bridge.returncode == 0, (tmp_path / "bridge.log").read_text()[-2000:]
            changes = _control(url, f"changes?after={start_seq}")
            hooks = _control(url, "webhooks")
        finally:
            sim.send_signal(signal.SIGTERM)
            sim.wait(15)
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert len({e["id"] for e in events}) == len(events), "an event was delivered twice"
    assert hooks["failed"] == 0
    assert hooks["sent"] > 10
    assert report["notices"]["used"] >= 10
    _check_arrivals(changes, seen)


def _announce_all(hook_port: int) -> dict[str, Any]:
    return {
        "url": f"http://127.0.0.1:{hook_port}/absorb/webhooks",
        "secret": SECRET,
        "kinds": ["course_enrollment", "lesson_enrollment", "session_enrollment"],
        "shapes": ["course", "user", "enrollment", "nested", "array", "odd_case"],
    }


def _watch(
    events_file: Path, for_s: float, seen: dict[tuple[str, str], float] | None = None
) -> dict[tuple[str, str], float]:
    """When each (subject, status) event first appeared in the sink's file, for `for_s`."""
    found = dict(seen or {})
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        if events_file.exists():
            for line in events_file.read_text().splitlines():
                event = json.loads(line)
                if event["type"].startswith("absorb.course_enrollment."):
                    found.setdefault((event["subject"], event["status"]), time.time())
        time.sleep(0.2)
    return found


def _check_arrivals(changes: list[dict[str, Any]], seen: dict[tuple[str, str], float]) -> None:
    steps: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        if change["kind"] == "course_enrollment":
            steps.setdefault(change["enrollmentId"], []).append(change)
    checked, late, delays = 0, [], []
    for rid, chain in steps.items():
        for i, change in enumerate(chain):
            if change["status"] is None:
                continue  # an un-enrollment is found by a reconciliation, not a sweep
            at = time_of(change["dateEdited"])
            following = chain[i + 1] if i + 1 < len(chain) else None
            if following is not None and time_of(following["dateEdited"]) - at < APART_S:
                continue
            arrived = seen.get((rid, Status(change["status"]).name))
            if arrived is not None:
                delays.append(arrived - at)
            if arrived is None or arrived - at > ARRIVAL_S:
                late.append((rid, change["status"], None if arrived is None else arrived - at))
            checked += 1
    delays.sort()
    if delays:  # shown with -s, and beside a failure
        print(
            f"{len(delays)} announced changes: change to file p50 "
            f"{delays[len(delays) // 2]:.2f}s, p99 {delays[int(len(delays) * 0.99)]:.2f}s, "
            f"max {delays[-1]:.2f}s (interval 60s)"
        )
    assert checked > 10, "too little happened to prove anything"
    assert not late, f"{len(late)} of {checked} changes late or missing: {late[:5]}"
