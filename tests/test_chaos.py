"""The short chaos run: faults of every kind under two replicas; nothing may be lost."""

from __future__ import annotations

from bench.chaos import FAULTS, run_chaos


async def test_short_chaos_run_loses_nothing() -> None:
    """Eight rounds of kills, crashes and misbehaving peers: every change arrives, in order."""
    report = await run_chaos(rounds=8, replicas=2, seed=4, fault_s=2.5)
    print(report.table())
    assert report.lost == 0, report.problems[:10]
    assert report.delivered > 50, "too little happened to prove anything"
    assert set(report.faults) <= set(FAULTS)
    assert sum(report.faults.values()) == 8
