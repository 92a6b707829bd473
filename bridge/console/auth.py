"""Who may use the console: the token, the session cookie it buys, CSRF tokens, and a brake.

Nothing here does I/O. The session cookie never holds the token: it is an expiry
and an HMAC of it keyed with the token, so changing the token ends every session,
and a stolen cookie stops working when it expires. The CSRF token of a page is an
HMAC of the session, checked on every form post. Failed attempts from one client
address slow it down: after `free_failures` each further one doubles the wait.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

#: The cookie that carries a console session.
COOKIE = "absorb_bridge_console"
#: How long a login lasts.
SESSION_S = 12 * 3600


def _mac(token: str, message: str) -> str:
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


def session_cookie(token: str, now_s: float) -> str:
    """A session cookie's value: when it expires and an HMAC of that, keyed with the token."""
    expires = int(now_s + SESSION_S)
    return f"{expires}.{_mac(token, f'session:{expires}')}"


def session_valid(token: str, cookie: str | None, now_s: float) -> bool:
    """Whether a cookie is a session the token made that has not expired."""
    if not cookie:
        return False
    expires, _, mac = cookie.partition(".")
    if not expires.isdigit() or int(expires) < now_s:
        return False
    return hmac.compare_digest(mac, _mac(token, f"session:{expires}"))


def bearer_valid(token: str, header: str | None) -> bool | None:
    """Whether an `Authorization` header carries the token; None when there is none."""
    if not header:
        return None
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def token_valid(token: str, given: str) -> bool:
    """Whether a token typed into the login form is the console's."""
    return hmac.compare_digest(given.strip().encode(), token.encode())


def csrf_token(token: str, session: str) -> str:
    """The CSRF token the pages of one session carry in their forms."""
    return _mac(token, f"csrf:{session}")


def csrf_valid(token: str, session: str, given: str | None) -> bool:
    """Whether a form's CSRF token belongs to the session that posts it."""
    return bool(given) and hmac.compare_digest(str(given), csrf_token(token, session))


@dataclass
class Brake:
    """Slows down guessing: per client address, failures in a row earn a growing wait.

    The first `free_failures` cost nothing; each after doubles the wait from
    `first_wait_s` up to `max_wait_s`. A success forgets the address. Kept in memory:
    each replica brakes on its own, which only makes guessing slower.
    """

    free_failures: int = 5
    first_wait_s: float = 1.0
    max_wait_s: float = 300.0
    max_clients: int = 10_000
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)

    def wait_s(self, client: str, now_s: float) -> float:
        """How long the client must still wait before its next try counts (0: go ahead)."""
        _, until = self._failures.get(client, (0, 0.0))
        return max(0.0, until - now_s)

    def failed(self, client: str, now_s: float) -> float:
        """Note a failed try; returns the wait it earned."""
        if len(self._failures) >= self.max_clients and client not in self._failures:
            # A flood of addresses must not grow memory without end: forget the calmest.
            calmest = min(self._failures, key=lambda c: self._failures[c][1])
            del self._failures[calmest]
        count = self._failures.get(client, (0, 0.0))[0] + 1
        over = count - self.free_failures
        wait = 0.0 if over <= 0 else min(self.max_wait_s, self.first_wait_s * 2 ** (over - 1))
        self._failures[client] = (count, now_s + wait)
        return wait

    def succeeded(self, client: str) -> None:
        """Forget a client's failures."""
        self._failures.pop(client, None)
