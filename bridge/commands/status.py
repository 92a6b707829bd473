"""`absorb-bridge status`: per feed its scopes' watermarks and lag, per sink its backlog."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bridge import clock
from bridge.absorb.timefmt import format_rfc3339
from bridge.commands.wiring import connect, load
from bridge.config import Config
from bridge.delivery import DeliveryQueue, outbox_lag
from bridge.notices.counts import read_counts
from bridge.store import Store
from bridge.sweep import from_us


def status(path_arg: str | None, *, as_json: bool = False) -> int:
    """Print the bridge's state from Redis; needs no running daemon."""
    config = load("status", path_arg)
    if isinstance(config, int):
        return config
    report = asyncio.run(_collect(config))
    print(json.dumps(report, indent=2) if as_json else render(report))
    return 0


async def _collect(config: Config) -> dict[str, Any]:
    async with connect(config) as parts:
        store = parts.store
        dropped = await store.dropped_counts()
        feeds = [await _feed(store, f.name, dropped) for f in config.feeds]
        sinks = []
        for sink in config.sinks:
            queue = DeliveryQueue(parts.redis, store.prefix, sink.name)
            lag = await outbox_lag(parts.redis, queue.outbox, queue.group)
            sinks.append(
                {
                    "name": sink.name,
                    "type": sink.type,
                    "backlog": lag["lag"] + lag["pending"],
                    **await queue.counts(),
                    "disabled": await queue.disabled(),
                }
            )
        return {
            "now": format_rfc3339(clock.now()),
            "outbox": await store.outbox_length(),
            "sink_groups_dropped": dropped.get("sink_groups", 0),
            "notices": await read_counts(parts.redis, store.prefix)
            if config.absorb.webhooks is not None
            else None,
            "feeds": feeds,
            "sinks": sinks,
        }


async def _feed(store: Store, name: str, dropped: dict[str, int]) -> dict[str, Any]:
    now = clock.now()
    scopes = []
    for key in await store.known_scopes(name):
        state = await store.scope_state(name, key)
        watermark = from_us(int(state["watermark"])) if state.get("watermark") else None
        scopes.append(
            {
                "scope": key,
                "watermark": format_rfc3339(watermark) if watermark else None,
                "lag_s": round((now - watermark).total_seconds(), 1) if watermark else None,
                "swept_at": state.get("swept_at"),
                "next_at": state.get("next_at"),
                "interval_s": float(state.get("interval_s", "0") or 0) or None,
                "last_error": state.get("last_error") or None,
            }
        )
    quarantined = await store.quarantined(name)
    lags = [s["lag_s"] for s in scopes if s["lag_s"] is not None]
    return {
        "name": name,
        "scopes": scopes,
        "max_lag_s": max(lags) if lags else None,
        "quarantine_dropped": dropped.get(f"quarantine:{name}", 0),
        "quarantined": [
            {"key": k, **{f: v for f, v in json.loads(v).items() if f != "raw"}}
            for k, v in sorted(quarantined.items())
        ],
    }


def render(report: dict[str, Any]) -> str:
    """The report as tables for a terminal."""
    lines = [f"absorb-bridge status at {report['now']}   outbox: {report['outbox']} events", ""]
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
        lines.append(f"  {'scope':<52} {'watermark':<28} {'lag':>8} {'every':>7}  next / error")
        for s in feed["scopes"]:
            tail = s["last_error"] or (s["next_at"] or "")
            every = _age(s["interval_s"])
            mark = s["watermark"] or "-"
            lines.append(f"  {s['scope']:<52} {mark:<28} {_age(s['lag_s']):>8} {every:>7}  {tail}")
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
