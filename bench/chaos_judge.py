"""The chaos run's checker: did every change Absorb made arrive, whole and in order?

It is a pure function of what the run recorded (`Evidence`), so it can be tested
on its own with chains that are whole, broken or cut short.

For each enrollment the events that arrived form a chain: every `status_changed`
names as `previousstatus` the status before it, and the last event ends at the
status Absorb shows now. A chain that breaks, or ends elsewhere, is a lost change,
except where the run's own faults allow it:

- Redis lost its data (`LossWindow`): the events queued then and the changes made
  before the bridge had baselined again may be missed; the bridge says so in its
  log. Such an enrollment may break once per loss it was caught in, and may end
  short only if it did not change after that loss. It is counted as missed, apart.
- A hostile record (`HOSTILE_RULES`) must be handled as the README documents it:
  delivered like any other, with an unknown status named `Unknown(N)`; one whose
  rule is quarantine may end short only if it is in the quarantine. Anything else
  is lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.absorb.models import Status

#: The hostile records a run plants, and whether quarantine is their documented outcome
#: (README, "Hostile records"): numbers out of range, new statuses, sentinel dates and
#: strange strings are handled, so their changes must arrive; a wrong type is quarantined.
HOSTILE_RULES: dict[str, bool] = {
    "progress_1e39": False,
    "status_13": False,
    "date_edited_9999": False,
    "lone_surrogate": False,
    "wrong_type": True,
}


def status_name(value: int) -> str:
    """A status number as events name it: the enum's name, or `Unknown(N)` outside it."""
    try:
        return Status(value).name
    except ValueError:
        return f"Unknown({value})"


@dataclass(frozen=True)
class LossWindow:
    """One loss of Redis's data: the changes made in `(after_seq, until_seq]`, and the
    enrollments whose events had not arrived yet when it happened (`pending`)."""

    after_seq: int
    until_seq: int
    pending: frozenset[str] = frozenset()


@dataclass
class Evidence:
    """What a run recorded, for `judge`."""

    #: Every request the receiver took, with the time it came: (time, CloudEvent).
    arrivals: list[tuple[float, dict[str, Any]]]
    #: Each course enrollment's status number when the run started.
    baseline: dict[str, int]
    #: Each course enrollment's status number as Absorb shows it at the end.
    holdings: dict[str, int]
    #: (sequence number, enrollment id) of every change Absorb made after the start; a
    #: change made between two numbered ones (a hostile value planted) has a fraction.
    changes: list[tuple[float, str]] = field(default_factory=list)
    losses: list[LossWindow] = field(default_factory=list)
    #: Hostile records planted: enrollment id -> a key of HOSTILE_RULES.
    hostile: dict[str, str] = field(default_factory=dict)
    #: Enrollment ids in the bridge's quarantine at the end.
    quarantined: set[str] = field(default_factory=set)


@dataclass
class Verdict:
    """What `judge` found."""

    delivered: int = 0
    duplicates: int = 0
    max_delay_s: float = 0.0
    lost: int = 0
    missed_in_data_loss: int = 0
    hostile: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def judge(evidence: Evidence) -> Verdict:
    """Check every enrollment's chain of events against what Absorb holds."""
    verdict = Verdict()
    ids = [event["id"] for _, event in evidence.arrivals]
    verdict.delivered = len(set(ids))
    verdict.duplicates = len(ids) - len(set(ids))
    chains = _chains(evidence.arrivals, verdict)
    caught, may_end_short = _losses(evidence)
    for rid in sorted(set(chains) | set(evidence.holdings)):
        _judge_one(rid, chains.get(rid, []), evidence, caught, may_end_short, verdict)
    return verdict


def _chains(
    arrivals: Iterable[tuple[float, dict[str, Any]]], verdict: Verdict
) -> dict[str, list[dict[str, Any]]]:
    first: dict[str, tuple[float, dict[str, Any]]] = {}
    for when, event in arrivals:
        first.setdefault(event["id"], (when, event))
    chains: dict[str, list[dict[str, Any]]] = {}
    for when, event in sorted(first.values(), key=lambda pair: pair[0]):
        sent = datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
        verdict.max_delay_s = max(verdict.max_delay_s, when - sent)
        if event["type"].startswith("absorb.course_enrollment."):
            chains.setdefault(event["subject"], []).append(event)
    return chains


def _losses(evidence: Evidence) -> tuple[dict[str, int], set[str]]:
    """How many losses each enrollment was caught in, and which may end short."""
    last_change: dict[str, float] = {}
    for seq, rid in evidence.changes:
        last_change[rid] = max(seq, last_change.get(rid, seq))
    caught: dict[str, int] = {}
    may_end_short: set[str] = set()
    for loss in evidence.losses:
        during = {rid for seq, rid in evidence.changes if loss.after_seq < seq <= loss.until_seq}
        for rid in during | loss.pending:
            caught[rid] = caught.get(rid, 0) + 1
            if last_change.get(rid, 0) <= loss.until_seq:
                may_end_short.add(rid)
    return caught, may_end_short


def _judge_one(
    rid: str,
    chain: list[dict[str, Any]],
    evidence: Evidence,
    caught: dict[str, int],
    may_end_short: set[str],
    verdict: Verdict,
) -> None:
    status = status_name(evidence.baseline[rid]) if rid in evidence.baseline else None
    breaks: list[str] = []
    for event in chain:
        if event["type"].endswith("status_changed") and event.get("previousstatus") != status:
            breaks.append(f"{rid}: {event.get('previousstatus')} after {status}")
        status = event["status"]
    held = evidence.holdings.get(rid)
    short = held is not None and status != status_name(held)
    if short:
        said = "never announced" if not chain else f"ends at {status}"
        breaks.append(f"{rid}: {said}, Absorb holds {status_name(held)}")
    category = evidence.hostile.get(rid)
    outcome = _outcome(rid, breaks, short, category, evidence, caught, may_end_short)
    if category is not None:
        # The hostile value is judged by where the chain ends; a break before it is the
        # data loss's, counted there.
        shown = "delivered" if outcome == "missed in data loss" and not short else outcome
        counts = verdict.hostile.setdefault(category, {})
        counts[shown] = counts.get(shown, 0) + 1
    if outcome == "missed in data loss":
        verdict.missed_in_data_loss += 1
    elif outcome == "lost":
        verdict.lost += 1
        where = f" (hostile: {category})" if category else ""
        quarantined = " (quarantined)" if rid in evidence.quarantined else ""
        verdict.problems += [b + where + quarantined for b in breaks]


def _outcome(
    rid: str,
    breaks: list[str],
    short: bool,
    category: str | None,
    evidence: Evidence,
    caught: dict[str, int],
    may_end_short: set[str],
) -> str:
    if not breaks:
        return "delivered"
    if category is not None and HOSTILE_RULES[category] and rid in evidence.quarantined:
        return "quarantined"
    loss_breaks = len(breaks) - (1 if short else 0)
    if rid in caught and loss_breaks <= caught[rid] and (not short or rid in may_end_short):
        return "missed in data loss"
    return "lost"
