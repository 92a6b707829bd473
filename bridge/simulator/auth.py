"""Absorb's authentication, as strict as the real one: one live token per admin user."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.simulator.simclock import SimClock


@dataclass
class _Issued:
    token: str
    issued_at: datetime


class Auth:
    """Checks the API key and credentials, issues tokens and judges bearer tokens."""

    def __init__(
        self, api_key: str, users: dict[str, str], clock: SimClock, token_ttl_s: float = 4 * 3600
    ) -> None:
        self.api_key = api_key
        self._passwords = users
        self.clock = clock
        self.token_ttl = timedelta(seconds=token_ttl_s)
        self._issued: dict[str, _Issued] = {}
        self.logins = 0

    def api_key_ok(self, value: str | None) -> bool:
        """Whether the `x-api-key` header carries the tenant's key."""
        return value is not None and secrets.compare_digest(value.lower(), self.api_key.lower())

    def authenticate(self, username: str, password: str, private_key: str) -> str | None:
        """A new token for the user (the previous one stops working), or None if refused."""
        expected = self._passwords.get(username)
        if expected is None or not secrets.compare_digest(password, expected):
            return None
        if not self.api_key_ok(private_key):
            return None
        token = secrets.token_urlsafe(32)
        self._issued[username] = _Issued(token, self.clock.now())
        self.logins += 1
        return token

    def user_of(self, authorization: str | None) -> str | None:
        """The username whose current, unexpired token this `Authorization` header carries."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        token = authorization.removeprefix("Bearer ").strip()
        now = self.clock.now()
        for username, issued in self._issued.items():
            if secrets.compare_digest(issued.token, token):
                return username if now - issued.issued_at < self.token_ttl else None
        return None

    def expire_all(self) -> int:
        """Forget every issued token (they all answer 401 from now on)."""
        count = len(self._issued)
        self._issued.clear()
        return count
