"""How well the budget keeps each feed's interval: the figures `status` and metrics show."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bridge.feeds import FeedSpec
from bridge.schedule import state
from bridge.schedule.policy import Tuning, bound_s, cycle_s
from bridge.store import Store


@dataclass(frozen=True)
class Figures:
    """One feed's scope ages and the interval the budget can keep."""

    feed: str
    scopes: int
    interval_s: float
    #: The interval the budget keeps for every scope of every feed at once.
    keepable_s: float
    #: No scope goes unswept longer than this (the hard staleness bound).
    bound_s: float
    age_p50_s: float | None
    age_p99_s: float | None
    age_max_s: float | None
    requests_per_s: float

    @property
    def shortfall_s(self) -> float:
        return max(0.0, self.keepable_s - self.interval_s)

    def warning(self) -> str | None:
        """What the shortfall means, or None when the interval is kept."""
        if self.shortfall_s <= 0:
            return None
        return (
            f"the budget of {self.requests_per_s:g} requests/s keeps an interval of "
            f"{self.keepable_s:.0f}s, not {self.interval_s:g}s ({self.shortfall_s:.0f}s short): "
            f"the busiest scopes are swept first and none waits longer than {self.bound_s:.0f}s"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shortfall_s": self.shortfall_s, "warning": self.warning()}


async def figures(
    store: Store,
    feeds: Sequence[FeedSpec],
    requests_per_s: float,
    now: float,
    tuning: Tuning | None = None,
) -> list[Figures]:
    """Every feed's figures from the scopes Redis knows (swept at least once)."""
    tuning = tuning or Tuning()
    kept = {
        f.name: await state.read(store, [(f, k) for k in await store.known_scopes(f.name)])
        for f in feeds
    }
    cost = sum(k.cost for ks in kept.values() for k in ks)
    needed = sum(k.cost / k.interval_s for ks in kept.values() for k in ks)
    stretch = max(1.0, needed / requests_per_s) if requests_per_s > 0 else float("inf")
    cycle = cycle_s(cost, requests_per_s)
    out = []
    for feed in feeds:
        ages = sorted(now - k.swept_at for k in kept[feed.name] if k.swept_at is not None)
        out.append(
            Figures(
                feed=feed.name,
                scopes=len(kept[feed.name]),
                interval_s=feed.interval_s,
                keepable_s=feed.interval_s * stretch,
                bound_s=bound_s(feed.interval_s, cycle, tuning),
                age_p50_s=_quantile(ages, 0.5),
                age_p99_s=_quantile(ages, 0.99),
                age_max_s=ages[-1] if ages else None,
                requests_per_s=requests_per_s,
            )
        )
    return out


def _quantile(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)
