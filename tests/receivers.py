"""In-process webhook receivers that check what a real consumer checks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cloudevents.v1.http import from_http
from standardwebhooks import Webhook

#: Decides the reply to the n-th request (0-based): a status, or a (status, headers) pair,
#: or None to accept. May sleep to play a slow receiver.
Behaviour = Callable[[int, web.Request], Awaitable[int | tuple[int, dict[str, str]] | None]]


async def accept_all(_n: int, _request: web.Request) -> None:
    """Accept every request."""


async def serve(app: web.Application, port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve `app` on loopback (on `port`, or a free one); its runner and base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{bound}"


def catch_all(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    """An app sending every method and path to `handler`."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


class CatchAll:
    """A loopback server whose `handle` answers every method and path."""

    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen on a free loopback port; returns the base URL."""
        self._runner, url = await serve(catch_all(self.handle))
        return url

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The answer to one request."""
        raise NotImplementedError


@dataclass
class Receiver:
    """Records every request, verifies its signature with each secret, parses it as a CloudEvent."""

    secrets: list[str]
    behaviour: Behaviour = accept_all
    requests: int = 0
    accepted: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> str:
        """Listen on loopback (on `port`, or a free one); returns the URL."""
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner, base = await serve(app, port)
        self.url = f"{base}/hook"
        return self.url

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        n = self.requests
        self.requests += 1
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
            except Exception as e:  # the library raises its own error types
                self.problems.append(f"signature with {secret[:10]}…: {e}")
        decision = await self.behaviour(n, request)
        if decision is not None:
            status, extra = decision if isinstance(decision, tuple) else (decision, {})
            return web.Response(status=status, headers=extra)
        try:
            event = from_http(headers, body)
        except Exception as e:  # any parse failure is a finding, not a crash of the receiver
            self.problems.append(f"not a CloudEvent: {e}")
            return web.Response(status=400)
        self.accepted.append({**event.get_attributes(), "data": event.data})
        self.headers.append(headers)
        self.bodies.append(body)
        return web.Response(status=204)

    def ids(self) -> list[str]:
        """Ids of accepted events, in arrival order."""
        return [str(e["id"]) for e in self.accepted]


@dataclass
class Recorder:
    """Answers 200 to anything, any method and path, and records what it received.

    Stands where a redirect points, to show that nothing is ever sent there.
    """

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen on a free loopback port; returns the base URL (no trailing slash)."""
        self._runner, self.url = await serve(catch_all(self._handle))
        return self.url

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append((request.method, request.path_qs, headers, await request.read()))
        return web.Response(status=200, text='"a-token-from-elsewhere"')


async def settle(
    step: Callable[[], Awaitable[int]], done: Callable[[], bool], timeout_s: float = 20
) -> None:
    """Run `step` until `done()` or the timeout (a test failure)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not done():
        if loop.time() > deadline:
            raise AssertionError("delivery did not settle in time")
        if not await step():
            await asyncio.sleep(0.02)
