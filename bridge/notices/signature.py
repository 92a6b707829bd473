"""The `absorb-signature` header: HMAC-SHA256 of the raw body, keyed with the Secret Key as UTF-8.

Absorb sends it as 64 lower-case hex characters, no prefix, no timestamp (FACTS.md,
medium confidence). Upper-case hex is accepted too, in case a proxy or a later
Absorb release changes the case; anything else is refused.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "absorb-signature"


def sign(body: bytes, secret: str) -> str:
    """The signature Absorb puts on `body`."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: str) -> bool:
    """Whether `header` is the signature of `body` under `secret` (compared in constant time)."""
    if header is None:
        return False
    given = header.strip().lower()
    if len(given) != 64:
        return False
    return hmac.compare_digest(given.encode("ascii", "replace"), sign(body, secret).encode())
