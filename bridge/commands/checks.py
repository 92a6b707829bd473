"""`status --check`: what in the status report needs a person, one line per problem.

Each check reads the report `status --json` prints and returns its problems; a new
check is one function added to `CHECKS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Report = dict[str, Any]
Check = Callable[[Report], list[str]]

#: Slack for a sweep that is under way or a scheduler tick late.
STALE_GRACE_S = 30.0


def replicas_running(report: Report) -> list[str]:
    """No `run` process has reported its loops recently: nothing sweeps or delivers."""
    if report["replicas"]:
        return []
    return ["no replica running: no `absorb-bridge run` has reported its loops recently"]


def dead_or_stalled_loops(report: Report) -> list[str]:
    """A loop of a replica that has ended or is wedged (dead), or completes no cycle (stalled)."""
    problems = []
    for replica in report["replicas"]:
        for state in ("dead", "stalled"):
            for loop, why in sorted(replica.get(state, {}).items()):
                problems.append(f"replica {replica['replica']}: loop {loop} {state}: {why}")
    return problems


def disabled_sinks(report: Report) -> list[str]:
    """A sink the bridge stopped delivering to (a 410) until someone replays it."""
    return [
        f"sink {sink['name']}: disabled: {sink['disabled']}"
        for sink in report["sinks"]
        if sink["disabled"]
    ]


def dead_letters(report: Report) -> list[str]:
    """Events that ran out of tries and wait for a replay."""
    return [
        f"sink {sink['name']}: {sink['dead_lettered']} dead letter"
        f"{'' if sink['dead_lettered'] == 1 else 's'} (see `dead-letters --sink {sink['name']}`)"
        for sink in report["sinks"]
        if sink["dead_lettered"]
    ]


def stale_scopes(report: Report) -> list[str]:
    """Scopes unswept for longer than the budget allows.

    The scheduler keeps every scope within its feed's interval while the budget
    allows, and within its staleness bound when it does not (`schedule.bound_s`);
    a scope older than the larger of the two, plus `STALE_GRACE_S`, needs a person.
    """
    problems = []
    for feed in report["feeds"]:
        schedule = feed.get("schedule") or {}
        if not schedule:
            continue
        limit = max(schedule["interval_s"], schedule["bound_s"]) + STALE_GRACE_S
        stale = [s for s in feed["scopes"] if s.get("age_s") is not None and s["age_s"] > limit]
        if stale:
            worst = max(stale, key=lambda s: s["age_s"])
            problems.append(
                f"feed {feed['name']}: {len(stale)} scope{'' if len(stale) == 1 else 's'} stale,"
                f" {worst['scope']} last swept {worst['age_s']:.0f}s ago"
                f" (the budget allows {limit - STALE_GRACE_S:.0f}s)"
            )
    return problems


def quarantined_records(report: Report) -> list[str]:
    """Records the bridge could not read, held until a sweep or `resync` reads them."""
    return [
        f"feed {feed['name']}: {len(feed['quarantined'])} quarantined record"
        f"{'' if len(feed['quarantined']) == 1 else 's'}"
        for feed in report["feeds"]
        if feed["quarantined"]
    ]


CHECKS: tuple[Check, ...] = (
    replicas_running,
    dead_or_stalled_loops,
    disabled_sinks,
    dead_letters,
    stale_scopes,
    quarantined_records,
)


def problems(report: Report) -> list[str]:
    """Every problem the checks find in the report, in the order of `CHECKS`."""
    return [line for check in CHECKS for line in check(report)]
