"""Deterministic UUIDs: statement ids from event ids, registrations from enrollment ids."""

from __future__ import annotations

import re
import uuid

#: The namespace of every statement id the bridge makes (itself a uuid5 of a fixed name,
#: so the same event gives the same statement id on every replica and version).
STATEMENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:absorb-bridge:xapi:statement")

_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def statement_id(event_id: str, verb: str) -> uuid.UUID:
    """The id of the statement `verb` made of event `event_id`: the same every time.

    The verb is part of it because one event may give two statements (completed and
    passed); a redelivered event gives the same ids, so the LRS keeps one of each.
    """
    return uuid.uuid5(STATEMENT_NAMESPACE, f"{event_id}\n{verb}")


def registered_id(enrollment_id: str) -> uuid.UUID:
    """The id of an enrollment's `registered` statement, from the enrollment id alone.

    So the `removed` event, which knows the enrollment and not the `created` event,
    can void exactly that statement.
    """
    return uuid.uuid5(STATEMENT_NAMESPACE, f"registered\n{enrollment_id.lower()}")


def registration(enrollment_id: object, field: str) -> uuid.UUID:
    """An Absorb enrollment id (a GUID) as the statement's registration UUID.

    Raises ValueError naming `field` when it is not a GUID: an id that is not one
    cannot be a registration, and making one up would split a learner's records.
    """
    if not isinstance(enrollment_id, str) or not _GUID.fullmatch(enrollment_id):
        raise ValueError(f"{field} {ascii(enrollment_id)[:60]} is not a GUID")
    return uuid.UUID(enrollment_id)
