"""Dropping or hashing named fields of `data.current`, `data.previous`, `data.parent`. Pure.

For audit streams that must not hold personal data: a sink's `personal_data` names
the fields (Absorb's names, such as `fullName`, `emailAddress`, `username`). A
dropped field is left out; a hashed one becomes `hmac-sha256:<hex>` keyed with
`hash_key` (or `sha256:<hex>` without one, which a guess of the value can match),
so equal values still match across events without showing them. Null stays null.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PersonalData:
    """What to do with which fields."""

    drop: frozenset[str] = frozenset()
    hash: frozenset[str] = frozenset()
    hash_key: bytes | None = None

    def __bool__(self) -> bool:
        return bool(self.drop or self.hash)


def scrub(event: dict[str, Any], policy: PersonalData) -> dict[str, Any]:
    """The event with the policy applied to `data.current`, `data.previous` and `data.parent`.

    A copy; `data.parent` names the learner of an attempt (`userId`, `fullName`), so
    it is scrubbed like the record.
    """
    data = event.get("data")
    if not policy or not isinstance(data, dict):
        return event
    data = dict(data)
    for part in ("current", "previous", "parent"):
        record = data.get(part)
        if isinstance(record, dict):
            data[part] = _scrubbed(record, policy)
    return {**event, "data": data}


def _scrubbed(record: dict[str, Any], policy: PersonalData) -> dict[str, Any]:
    kept = {}
    for name, value in record.items():
        if name in policy.drop:
            continue
        kept[name] = _hashed(value, policy.hash_key) if name in policy.hash else value
    return kept


def _hashed(value: Any, key: bytes | None) -> Any:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if key is None:
        return "sha256:" + hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()
    digest = hmac.new(key, text.encode(errors="surrogatepass"), hashlib.sha256).hexdigest()
    return "hmac-sha256:" + digest
