"""The error tree: one root, a few children that carry the context a user needs."""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error absorb-bridge raises on purpose."""


class AbsorbError(BridgeError):
    """A call to the Absorb API failed; `endpoint` names the call (method and path)."""

    def __init__(self, endpoint: str, message: str, *, status: int | None = None) -> None:
        self.endpoint = endpoint
        self.status = status
        where = f"{endpoint} -> HTTP {status}" if status is not None else endpoint
        super().__init__(f"{where}: {message}")


class AbsorbAuthError(AbsorbError):
    """Absorb refused the credentials or kept refusing a fresh token."""


class AbsorbRequestError(AbsorbError):
    """Absorb rejected the request itself (4xx other than 401/429): retrying will not help."""


class AbsorbUnavailableError(AbsorbError):
    """Absorb kept failing (429, 5xx, timeouts, refused connections) after every try."""


class AbsorbResponseError(AbsorbError):
    """Absorb answered 2xx with a body that is not what the operation promises."""


class AbsorbPagingError(AbsorbError):
    """A collection is too large to page through within Absorb's page-index limit."""
