"""The bridge's state as one report: what `status` prints and the console's overview shows.

Both read it through `collect`, so the figures a person sees in the console are the
ones `status --json` prints at the same moment.
"""

from __future__ import annotations

import json
from typing import Any

from bridge import clock, replicas
from bridge.absorb.timefmt import format_rfc3339
from bridge.commands.wiring import Parts, feed_spec
from bridge.config import Config
from bridge.delivery import DeliveryQueue, outbox_lag
from bridge.notices.counts import read_counts
from bridge.schedule.figures import figures
from bridge.store import Store
from bridge.sweep import from_us


async def collect(config: Config, parts: Parts) -> dict[str, Any]:
    """The report `status --json` prints and the console's overview shows, read now."""
    store = parts.store
    dropped = await store.dropped_counts()
    feeds = [await _feed(store, f.name, dropped) for f in config.feeds]
    specs = [feed_spec(f) for f in config.feeds]
    rate = config.absorb.max_requests_per_second
    now = clock.now().timestamp()
    for feed, fig in zip(feeds, await figures(store, specs, rate, now), strict=True):
        feed["schedule"] = fig.as_dict()
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
        "replicas": await replicas.read_all(parts.redis, store.prefix),
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
                "age_s": _since(state.get("sweep_started"), now.timestamp()),
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


def _since(unix: str | None, now: float) -> float | None:
    """Seconds since a Unix time kept as text; None when absent or not a number."""
    try:
        return round(max(0.0, now - float(unix)), 1) if unix else None
    except ValueError:
        return None
