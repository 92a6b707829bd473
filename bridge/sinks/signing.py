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
    content = f"{msg_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: Iterable[str], msg_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated (rotation)."""
    return " ".join(signature(s, msg_id, timestamp, body) for s in secrets)
