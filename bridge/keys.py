"""Every Redis key the bridge uses is built here, under the configured prefix."""

from __future__ import annotations

import hashlib


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def absorb_token(prefix: str, base_url: str, username: str) -> str:
    """The shared Absorb token of one admin user on one tenant (hashed: no names in key space)."""
    return f"{prefix}:absorb-token:{_digest(base_url, username)}"


def absorb_token_lock(prefix: str, base_url: str, username: str) -> str:
    """The lock held by the one worker that is logging in for everyone."""
    return absorb_token(prefix, base_url, username) + ":lock"
