"""`absorb-bridge resync --feed NAME`: a full reconciliation sweep of one feed, now."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import structlog

from bridge.commands.wiring import Parts, connect, feed_spec, load
from bridge.config import Config
from bridge.feeds import discover_scopes
from bridge.service import Bridge, Timing

log = structlog.get_logger(__name__)


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
    async with connect(config) as parts:
        totals = await resync_feed(config, parts, feed_name, wait_s=wait_s)
        skipped = totals["of"] - totals["scopes"]
        if skipped:
            print(f"absorb-bridge resync: {skipped} scope(s) stayed busy (leased elsewhere)")
        print(
            f"resync of {feed_name}: {totals['scopes']}/{totals['of']} scopes, "
            f"{totals['records']} records, {totals['events']} events "
            f"({totals['removed']} removed), {totals['quarantined']} still quarantined"
        )
        return 0 if totals["scopes"] == totals["of"] else 1


async def resync_feed(
    config: Config,
    parts: Parts,
    feed_name: str,
    *,
    wait_s: float = 120.0,
    scope_keys: Collection[str] | None = None,
) -> dict[str, int]:
    """Sweep scopes of a feed in full (all, or those in `scope_keys`); the totals.

    A full sweep reads every record of a scope again, so a quarantined record that
    now reads well leaves quarantine. `of` is how many scopes were to be swept, and
    `scopes` how many were: one leased elsewhere for longer than `wait_s` is skipped.
    """
    spec = feed_spec(next(f for f in config.feeds if f.name == feed_name))
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
    if scope_keys is not None:
        scopes = [s for s in scopes if s.key in scope_keys]
    totals = {"of": len(scopes), "scopes": 0, "records": 0, "events": 0}
    totals |= {"removed": 0, "quarantined": 0}
    loop = asyncio.get_running_loop()
    for scope in scopes:
        deadline = loop.time() + wait_s
        while (result := await bridge.sweep_scope(scope, full=True)) is None:
            if loop.time() > deadline:
                log.warning("resync.scope_busy", feed=feed_name, scope=scope.key)
                break
            await asyncio.sleep(1.0)
        if result is None:
            continue
        totals["scopes"] += 1
        totals["records"] += result.records
        totals["events"] += result.events
        totals["removed"] += result.removed
        totals["quarantined"] += result.quarantined
    return totals
