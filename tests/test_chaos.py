"""The short chaos run, and the checker that judges every chaos run."""

from __future__ import annotations

import random
from typing import Any

import pytest

from bench.chaos import FAULTS, run_chaos, schedule
from bench.chaos_judge import Evidence, LossWindow, judge

NEW_FAULTS = (
    "absorb_hostile_records",
    "redis_flushall",
    "redis_restart_empty",
    "receiver_redirect",
)


async def test_short_chaos_run_loses_nothing() -> None:
    """Eight rounds under two replicas, with data loss, hostile records and redirects among
    them: every change arrives in order but those the data loss swallowed, which the
    bridge announced; hostile records are handled as documented; nothing is sent to a
    redirect's Location and every receiver fault was felt."""
    report = await run_chaos(rounds=8, replicas=2, seed=4, fault_s=2.5, include=NEW_FAULTS)
    print(report.table())
    assert report.lost == 0, report.problems[:10]
    assert report.delivered > 50, "too little happened to prove anything"
    assert report.sent_elsewhere == 0, report.problems[:10]
    assert report.bad_signatures == 0
    assert report.data_losses == 2
    assert report.unrecovered_losses == 0, report.problems[:10]
    assert report.unannounced_losses == 0, report.problems[:10]
    assert report.unfelt_faults == []
    assert report.hostile, "no hostile record was still enrolled at the end"


# ---- the checker on its own -----------------------------------------------------------

T0 = 1_800_000_000.0


def _event(n: int, rid: str, previous: str | None, status: str) -> tuple[float, dict[str, Any]]:
    kind = "status_changed" if previous is not None else "created"
    event = {
        "id": f"e{n}",
        "type": f"absorb.course_enrollment.{kind}",
        "subject": rid,
        "time": "2027-01-15T08:00:00Z",
        "status": status,
    }
    if previous is not None:
        event["previousstatus"] = previous
    return T0 + n, event


def test_a_whole_chain_is_delivered() -> None:
    """Chains that follow each status change to the one Absorb holds lose nothing."""
    found = judge(
        Evidence(
            arrivals=[
                _event(1, "a", "NotStarted", "InProgress"),
                _event(2, "b", None, "NotStarted"),
            ],
            baseline={"a": 0, "c": 2},
            holdings={"a": 1, "b": 0, "c": 2},
        )
    )
    assert (found.lost, found.delivered, found.problems) == (0, 2, [])


@pytest.mark.parametrize(
    ("arrivals", "holdings", "problem"),
    [
        # The middle change never arrived: the chain breaks.
        (
            [_event(1, "a", "NotStarted", "InProgress"), _event(2, "a", "Failed", "Complete")],
            {"a": 3},
            "a: Failed after InProgress",
        ),
        # The last change never arrived: the chain ends short.
        ([_event(1, "a", "NotStarted", "InProgress")], {"a": 3}, "a: ends at InProgress"),
        # A change with no event at all.
        ([], {"a": 1}, "a: never announced"),
        # A new enrollment never announced.
        ([], {"a": 0, "new": 0}, "new: never announced"),
    ],
)
def test_a_lost_change_is_found(
    arrivals: list[tuple[float, dict[str, Any]]], holdings: dict[str, int], problem: str
) -> None:
    """A change missing in the middle or at the end of a chain, or never announced, is lost."""
    found = judge(Evidence(arrivals=arrivals, baseline={"a": 0}, holdings=holdings))
    assert found.lost == 1
    assert len(found.problems) == 1, found.problems
    assert found.problems[0].startswith(problem), found.problems


def test_changes_swallowed_by_a_data_loss_are_counted_apart() -> None:
    """A change made while Redis's data was gone may be missed and is counted apart; a
    change made after the bridge baselined again must arrive."""
    losses = [LossWindow(after_seq=10, until_seq=20, pending=frozenset({"p"}))]
    changes = [(5, "p"), (15, "a"), (15, "b"), (25, "b")]
    arrivals = [
        _event(1, "p", "NotStarted", "InProgress"),  # then Complete at 5, queued when lost
    ]
    found = judge(
        Evidence(
            arrivals=arrivals,
            baseline={"a": 0, "b": 0, "p": 0},
            holdings={"a": 1, "b": 3, "p": 3},
            changes=changes,
            losses=losses,
        )
    )
    assert found.missed_in_data_loss == 2  # a (changed in the gap), p (queued when lost)
    assert found.lost == 1  # b changed again after the baseline, and that never arrived
    assert found.problems == ["b: never announced, Absorb holds Complete"]


def test_a_hostile_value_planted_after_a_data_loss_must_arrive() -> None:
    """An enrollment caught in a data loss is still held to a hostile value planted after
    the bridge had baselined again."""
    evidence = Evidence(
        arrivals=[],
        baseline={"s": 1},
        holdings={"s": 13},
        changes=[(15.0, "s"), (25.5, "s")],
        losses=[LossWindow(after_seq=10, until_seq=20)],
        hostile={"s": "status_13"},
    )
    found = judge(evidence)
    assert found.hostile == {"status_13": {"lost": 1}}
    assert found.problems == ["s: never announced, Absorb holds Unknown(13) (hostile: status_13)"]
    evidence.changes = [(15.0, "s")]
    assert judge(evidence).hostile == {"status_13": {"missed in data loss": 1}}
    # A change lost in the gap, then the hostile status announced: both are told apart.
    evidence.changes = [(15.0, "s"), (25.5, "s")]
    evidence.arrivals = [_event(1, "s", "NotStarted", "Unknown(13)")]
    found = judge(evidence)
    assert (found.missed_in_data_loss, found.lost) == (1, 0)
    assert found.hostile == {"status_13": {"delivered": 1}}


def test_hostile_records_are_held_to_their_rules() -> None:
    """An unknown status must arrive as Unknown(13); a record handled by a rule must be
    delivered even if it sits in the quarantine; a wrong type may end in the quarantine."""
    arrivals = [_event(1, "s", "InProgress", "Unknown(13)")]
    evidence = Evidence(
        arrivals=arrivals,
        baseline={"s": 1, "w": 1, "x": 1, "p": 1, "u": 1},
        holdings={"s": 13, "w": 3, "x": 3, "p": 3, "u": 3},
        hostile={
            "s": "status_13",
            "w": "wrong_type",
            "x": "wrong_type",
            "p": "progress_1e39",
            "u": "lone_surrogate",
        },
        quarantined={"w", "p"},
    )
    found = judge(evidence)
    assert found.hostile == {
        "status_13": {"delivered": 1},
        "wrong_type": {"quarantined": 1, "lost": 1},
        "progress_1e39": {"lost": 1},
        "lone_surrogate": {"lost": 1},
    }
    assert found.lost == 3
    assert found.problems == [
        "p: never announced, Absorb holds Complete (hostile: progress_1e39) (quarantined)",
        "u: never announced, Absorb holds Complete (hostile: lone_surrogate)",
        "x: never announced, Absorb holds Complete (hostile: wrong_type)",
    ]


def test_the_schedule_plays_what_it_must_and_every_fault_before_repeating() -> None:
    """`include` is always played; the rest come from a deck, no repeat before all were dealt."""
    plan = schedule(random.Random(7), 8, NEW_FAULTS)
    assert set(NEW_FAULTS) <= set(plan)
    assert len(plan) == len(set(plan)) == 8
    long = schedule(random.Random(7), 2 * len(FAULTS))
    assert sorted(long) == sorted(FAULTS * 2)
    with pytest.raises(ValueError, match="nosuch"):
        schedule(random.Random(7), 3, ["nosuch"])
