"""The documented table: which verbs an event becomes, by its change and new status.

ADL verbs (`http://adlnet.gov/expapi/verbs/…`, cmi5's included) throughout. An
enrollment that is gone voids its `registered` statement, whose id comes from the
enrollment id for that reason.
"""

from __future__ import annotations

from dataclasses import dataclass

ADL = "http://adlnet.gov/expapi/verbs/"


@dataclass(frozen=True)
class Verb:
    """An xAPI verb: its IRI and its English display name."""

    id: str
    display: str


REGISTERED = Verb(ADL + "registered", "registered")
ATTEMPTED = Verb(ADL + "attempted", "attempted")
LAUNCHED = Verb(ADL + "launched", "launched")
COMPLETED = Verb(ADL + "completed", "completed")
PASSED = Verb(ADL + "passed", "passed")
FAILED = Verb(ADL + "failed", "failed")
ABANDONED = Verb(ADL + "abandoned", "abandoned")
WAIVED = Verb(ADL + "waived", "waived")
PROGRESSED = Verb(ADL + "progressed", "progressed")
VOIDED = Verb(ADL + "voided", "voided")

#: The verb of a new status (by Absorb's enum name); statuses not here give no statement.
BY_STATUS = {
    "InProgress": ATTEMPTED,
    "Complete": COMPLETED,
    "Failed": FAILED,
    # Ended without completing: cmi5's "abandoned", with `completion: false`.
    "NotComplete": ABANDONED,
    "Absent": ABANDONED,
    "Declined": ABANDONED,
    # Not required of this learner: cmi5's "waived".
    "NotApplicable": WAIVED,
}


def for_event(resource: str, change: str, status: str | None, *, scored: bool) -> list[Verb]:
    """The verbs of one event, in the order their statements are sent (may be none).

    `scored`: the record carries a score, so a completion is also a pass (Absorb
    marks an assessed enrollment Complete only once its score passes).
    """
    if change == "removed":
        return [VOIDED]
    if change == "progress_changed":
        return [PROGRESSED]
    attempt = resource == "attempt"
    # An attempt is not enrolled in: its start is its `launched`.
    verbs = [REGISTERED] if change == "created" and not attempt else []
    verb = BY_STATUS.get(status or "")
    if verb is ATTEMPTED and attempt:
        verb = LAUNCHED
    elif verb is not None and attempt and change == "created":
        # First seen already finished: it was launched all the same (at its startDate).
        verbs.append(LAUNCHED)
    if verb is None or (verb is ATTEMPTED and change == "created"):
        return verbs
    verbs.append(verb)
    if verb is COMPLETED and scored:
        verbs.append(PASSED)
    return verbs
