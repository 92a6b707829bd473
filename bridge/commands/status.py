"""`absorb-bridge status`: per feed its scopes' watermarks and lag, per sink its backlog."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bridge.commands.checks import problems
from bridge.commands.report import collect
from bridge.commands.wiring import connect, load
from bridge.config import Config


def status(path_arg: str | None, *, as_json: bool = False, check: bool = False) -> int:
    """Print the bridge's state from Redis; needs no running daemon.

    With `check`, also one line per problem that needs a person (on stderr, after
    the report) and exit 1 when there is any.
    """
    config = load("status", path_arg)
    if isinstance(config, int):
        return config
    report = asyncio.run(_collect(config))
    found = problems(report)
    if check:
        report["problems"] = found
    print(json.dumps(report, indent=2) if as_json else render(report))
    if not check:
        return 0
    for line in found:
        print(f"PROBLEM: {line}", file=sys.stderr)
    return 1 if found else 0


async def _collect(config: Config) -> dict[str, Any]:
    async with connect(config) as parts:
        return await collect(config, parts)


def render(report: dict[str, Any]) -> str:
    """The report as tables for a terminal."""
    lines = [f"absorb-bridge status at {report['now']}   outbox: {report['outbox']} events"]
    for replica in report["replicas"]:
        trouble = len(replica.get("dead", {})) + len(replica.get("stalled", {}))
        lines.append(
            f"replica {replica['replica']}: {replica['loops']} loops, "
            f"{f'{trouble} dead or stalled' if trouble else 'all running'}"
            f" (reported {_age(replica['age_s'])} ago)"
        )
    lines.append("")
    if report.get("notices") is not None:
        lines += [_notices(report["notices"]), ""]
    for feed in report["feeds"]:
        lag = feed["max_lag_s"]
        lines.append(
            f"feed {feed['name']}: {len(feed['scopes'])} scopes, "
            f"max lag {_age(lag)}, {len(feed['quarantined'])} quarantined"
            + (
                f" ({feed['quarantine_dropped']} oldest dropped)"
                if feed["quarantine_dropped"]
                else ""
            )
        )
        if sched := feed.get("schedule"):
            lines.append(
                f"  scope age p50 {_age(sched['age_p50_s'])}, p99 {_age(sched['age_p99_s'])}, "
                f"max {_age(sched['age_max_s'])}; interval {_age(sched['interval_s'])}, "
                f"the budget keeps {_age(sched['keepable_s'])}"
            )
            if sched["warning"]:
                lines.append(f"  WARNING: {sched['warning']}")
        lines.append(f"  {'scope':<52} {'watermark':<28} {'lag':>8} {'age':>7}  error")
        for s in feed["scopes"]:
            tail = s["last_error"] or ""
            age = _age(s["age_s"])
            mark = s["watermark"] or "-"
            lines.append(f"  {s['scope']:<52} {mark:<28} {_age(s['lag_s']):>8} {age:>7}  {tail}")
        for q in feed["quarantined"]:
            lines.append(f"  quarantined {q['key']}: {q['error']}")
        lines.append("")
    lines.append(
        f"  {'sink':<24} {'type':<14} {'backlog':>8} {'queued':>7} {'retrying':>9} {'dead':>6}"
        f" {'dropped':>8}"
    )
    for sink in report["sinks"]:
        lines.append(
            f"  {sink['name']:<24} {sink['type']:<14} {sink['backlog']:>8} {sink['queued']:>7} "
            f"{sink['retrying']:>9} {sink['dead_lettered']:>6} {sink['dead_letters_dropped']:>8}"
            + (f"  DISABLED: {sink['disabled']}" if sink["disabled"] else "")
        )
    if report["sink_groups_dropped"]:
        lines.append(
            f"  {report['sink_groups_dropped']} outbox group(s) of removed sinks dropped"
            " after their grace period"
        )
    return "\n".join(lines)


def _notices(counts: dict[str, Any]) -> str:
    refused = ", ".join(f"{n} {why}" for why, n in counts["refused_by_reason"].items() if n)
    return (
        f"notices (Absorb's webhooks): {counts['received']} received, {counts['used']} used, "
        f"{counts['unusable']} unusable, {counts['failed']} lookups failed, "
        f"{counts['refused']} refused" + (f" ({refused})" if refused else "")
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
