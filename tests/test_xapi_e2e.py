"""`absorb-bridge run` against `absorb-bridge simulate` with an xapi sink to Ralph, all real
processes: every course completion in the simulator's change log is one `completed`
statement in the LRS."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge.absorb.models import Status, parse_timestamp
from tests.conftest import daemon_config, free_port
from tests.fixtures_lrs import Lrs, read_statements
from tests.test_run_e2e import BRIDGE, _control, _until_baselined, _wait_port

ACTIVE_S = 12
INTERVAL_S = 1
#: Changes of one enrollment closer than this may be seen as one by a single sweep.
APART_S = 2 * INTERVAL_S
COMPLETED = "http://adlnet.gov/expapi/verbs/completed"


def _config(tmp_path: Path, sim_url: str, redis_url: str, lrs: Lrs, port: int) -> Path:
    return daemon_config(
        tmp_path / "bridge.yaml",
        sim_url=sim_url,
        redis_url=redis_url,
        prefix=f"xapi-e2e-{port}",
        interval_s=INTERVAL_S,
        sinks=f"""  - name: lrs
    type: xapi
    endpoint: {lrs.url}
    username: {lrs.username}
    password: ${{LRS_PASSWORD}}
    retry_schedule: [0.2s, 0.5s, 1s, 2s, 5s]
""",
        routes="""  - sinks: [lrs]
    types: [absorb.course_enrollment.created, absorb.course_enrollment.status_changed]
""",
    )


def test_every_simulated_completion_is_one_completed_statement(
    redis_url: str, lrs: Lrs, tmp_path: Path
) -> None:
    """Live simulator activity through `run` to Ralph: each completion the simulator logged
    (apart enough from the next change to be seen) is in the LRS once, at its dateEdited."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sim_args = [
        "simulate", "--port", str(port), "--api-key", "K", "--username", "U", "--password", "W",
        "--users", "60", "--courses", "4", "--seed", "23",
    ]  # fmt: skip
    config = _config(tmp_path, url, redis_url, lrs, port)
    env = {**os.environ, "LRS_PASSWORD": lrs.password}
    with subprocess.Popen([*BRIDGE, *sim_args], stdout=subprocess.DEVNULL) as sim:
        try:
            _wait_port(port, sim)
            start_seq = _control(url, "state")["lastChange"]
            log = (tmp_path / "bridge.log").open("wb")
            with subprocess.Popen(
                [*BRIDGE, "run", "--config", str(config)], env=env, stderr=log
            ) as bridge:
                try:
                    _until_baselined(config, env, 4, 0.5)
                    _control(url, "activity", {"per_second": 6}, method="PUT")
                    time.sleep(ACTIVE_S)
                    _control(url, "activity", {"per_second": 0}, method="PUT")
                    time.sleep(INTERVAL_S * 5)
                finally:
                    bridge.send_signal(signal.SIGTERM)
                    bridge.wait(30)
                    log.close()
                bridge_log = (tmp_path / "bridge.log").read_text()
                assert bridge.returncode == 0, bridge_log[-2000:]
            changes = _control(url, f"changes?after={start_seq}")
        finally:
            sim.send_signal(signal.SIGTERM)
            sim.wait(15)
    assert lrs.password not in bridge_log
    assert "dead_lettered" not in bridge_log, bridge_log[-2000:]
    completions = _stable_completions(changes)
    assert len(completions) >= 5, "too few completions to prove anything"
    for enrollment_id, moments in completions.items():
        stored = asyncio.run(read_statements(lrs, registration=enrollment_id))
        landed = Counter(_instant(s["timestamp"]) for s in stored if s["verb"]["id"] == COMPLETED)
        for moment in moments:
            assert landed[moment] == 1, f"{enrollment_id}: completion at {moment}: {landed}"


def _stable_completions(changes: list[dict[str, Any]]) -> dict[str, list[datetime]]:
    """Per course enrollment, when it became Complete, for completions no change followed
    within APART_S (a sweep sees those; quicker ones it may see merged)."""
    steps: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        if change["kind"] == "course_enrollment":
            steps.setdefault(change["enrollmentId"], []).append(change)
    found: dict[str, list[datetime]] = {}
    for enrollment_id, chain in steps.items():
        times = [_instant(c["dateEdited"]) for c in chain]
        if any((b - a).total_seconds() < APART_S for a, b in itertools.pairwise(times)):
            continue
        done = [t for c, t in zip(chain, times, strict=True) if c["status"] == Status.Complete]
        if done:
            found[enrollment_id] = done
    return found


def _instant(text: str) -> datetime:
    return parse_timestamp(text)
