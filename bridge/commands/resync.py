"""`absorb-bridge resync --feed NAME`: a full reconciliation sweep of one feed, now."""

from __future__ import annotations

import asyncio

from bridge.commands.wiring import connect, feed_spec, load
from bridge.config import Config
from bridge.feeds import discover_scopes
from bridge.service import Bridge, Timing


def resync(path_arg: str | None, feed_name: str, *, wait_s: float = 120.0) -> int:
    """Sweep every scope of the feed in full: removals found, quarantined records retried."""
    config = load("resync", path_arg)
    if isinstance(config, int):
        return config
    names = [f.name for f in config.feeds]
    if feed_name not in names:
        print(
            f"absorb-bridge resync: no feed '{feed_name}' in the config (feeds: {', '.join(names)})"
        )
        return 1
    return asyncio.run(_resync(config, feed_name, wait_s))


async def _resync(config: Config, feed_name: str, wait_s: float) -> int:
    spec = feed_spec(next(f for f in config.feeds if f.name == feed_name))
    async with connect(config) as parts:
        bridge = Bridge(
            client=parts.client,
            store=parts.store,
            feeds=[spec],
            sinks=[],
            routes=[],
            source=config.absorb.base_url,
            page_size=config.absorb.page_size,
            timing=Timing(),
        )
        scopes = await discover_scopes(spec, parts.client)
        totals = {"scopes": 0, "records": 0, "events": 0, "removed": 0, "quarantined": 0}
        loop = asyncio.get_running_loop()
        for scope in scopes:
            deadline = loop.time() + wait_s
            while (result := await bridge.sweep_scope(scope, full=True)) is None:
                if loop.time() > deadline:
                    print(f"absorb-bridge resync: {scope} stayed busy (leased elsewhere); skipped")
                    break
                await asyncio.sleep(1.0)
            if result is None:
                continue
            totals["scopes"] += 1
            totals["records"] += result.records
            totals["events"] += result.events
            totals["removed"] += result.removed
            totals["quarantined"] += result.quarantined
        print(
            f"resync of {feed_name}: {totals['scopes']}/{len(scopes)} scopes, "
            f"{totals['records']} records, {totals['events']} events "
            f"({totals['removed']} removed), {totals['quarantined']} still quarantined"
        )
        return 0 if totals["scopes"] == len(scopes) else 1
