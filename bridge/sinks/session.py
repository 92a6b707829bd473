"""The HTTP client session every HTTP sink delivers through."""

from __future__ import annotations

import aiohttp

from bridge import __version__


def http_session(*, tls_verify: bool = True, max_in_flight: int = 100) -> aiohttp.ClientSession:
    """A session for one sink: kept-alive connections for every delivery under way at once,
    the bridge's User-Agent, and no cookies (a receiver's have no business in the next
    delivery)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=tls_verify, limit=max_in_flight),
        headers={"User-Agent": f"absorb-bridge/{__version__}"},
        cookie_jar=aiohttp.DummyCookieJar(),
    )
