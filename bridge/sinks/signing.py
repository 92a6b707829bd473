"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`. Pure."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (the base64-decoded part)."""
    return base64.b64decode(secret.removeprefix(PREFIX))


def signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """One `v1,<base64>` signature of a message."""
    return Signer([secret]).header(msg_id, timestamp, body.encode())


def signature_header(secrets: Iterable[str], msg_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated (rotation)."""
    return Signer(secrets).header(msg_id, timestamp, body.encode())


class Signer:
    """Signs messages with every secret, their keys decoded once rather than per message."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._keys = [secret_key(s) for s in secrets]

    def header(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The `webhook-signature` value of a message whose body is already encoded."""
        prefix = f"{msg_id}.{timestamp}.".encode()
        signatures = []
        for key in self._keys:
            mac = hmac.new(key, prefix, hashlib.sha256)
            mac.update(body)
            signatures.append("v1," + base64.b64encode(mac.digest()).decode())
        return " ".join(signatures)
