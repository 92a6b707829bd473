"""The endpoint Absorb posts its webhooks to, on a port of its own: verify, answer, queue.

Nothing slow happens before the answer: a verified JSON body goes into a bounded
in-memory queue and gets 202; the resolver's loop does the rest. Refusals:
401 for a missing or wrong `absorb-signature`, 413 for a body over
`max_body_bytes` (read no further than that), 400 for a body that is not JSON,
and 503 with `Retry-After` while the queue is full, so that Absorb may try again
later (whether it does is not documented) rather than have the notice vanish.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from bridge import clock
from bridge.notices.counts import NoticeCounts
from bridge.notices.signature import HEADER, verify
from bridge.redaction import excerpt

log = structlog.get_logger(__name__)

#: A notice is a few ids; a body bigger than this is refused with 413 unread.
MAX_BODY_BYTES = 64 * 1024
#: Notices waiting for the resolver; beyond it Absorb is told 503 to come back.
QUEUE_SIZE = 1000


@dataclass(frozen=True)
class Notice:
    """A verified notice: its JSON body and when it arrived (Unix seconds)."""

    body: Any
    received_at: float


class NoticeListener:
    """Absorb's webhook endpoint: `path` on its own aiohttp server, POST only."""

    def __init__(
        self,
        *,
        secret: str,
        path: str,
        counts: NoticeCounts,
        max_body_bytes: int = MAX_BODY_BYTES,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._secret = secret
        self.path = path
        self.counts = counts
        self.max_body_bytes = max_body_bytes
        self.queue: asyncio.Queue[Notice] = asyncio.Queue(queue_size)
        self._runner: web.AppRunner | None = None
        #: The port bound once started.
        self.port: int | None = None

    def app(self) -> web.Application:
        """The aiohttp application with the one route."""
        application = web.Application(client_max_size=self.max_body_bytes)
        application.router.add_post(self.path, self._receive)
        return application

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port); returns the port bound."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        bound: int = sockets[0].getsockname()[1] if sockets else port
        self.port = bound
        log.info("notices.listening", listen=f"{host}:{bound}", path=self.path)
        return bound

    async def stop(self) -> None:
        """Stop listening; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await self._read(request)
        if body is None:
            return self._refuse(413, "too_large", b"", f"over {self.max_body_bytes} bytes")
        if not verify(body, request.headers.get(HEADER), self._secret):
            why = "missing" if HEADER not in request.headers else "does not match the body"
            return self._refuse(401, "signature", body, f"{HEADER} {why}")
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            return self._refuse(400, "not_json", body, "the body is not JSON")
        try:
            self.queue.put_nowait(Notice(parsed, clock.now().timestamp()))
        except asyncio.QueueFull:
            response = self._refuse(503, "busy", body, "too many notices waiting")
            response.headers["Retry-After"] = "5"
            return response
        self.counts.note("received")
        return web.json_response({"accepted": True}, status=202)

    async def _read(self, request: web.Request) -> bytes | None:
        """The raw body, or None when it is longer than allowed (never read further)."""
        if (request.content_length or 0) > self.max_body_bytes:
            return None
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(16 * 1024):
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _refuse(self, status: int, reason: str, body: bytes, why: str) -> web.Response:
        self.counts.note("refused", reason)
        text = excerpt(body[:120].decode("utf-8", "replace"), [self._secret], limit=120)
        log.warning("notice.refused", status=status, reason=reason, why=why, body=text)
        return web.json_response({"error": why}, status=status)
